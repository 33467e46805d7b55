"""Risk limits built from a bot's risk block: one gate every order and every bar goes through.

No Django imports: the simulation engine calls it on the hot path. A breach latches the halt.
"""
from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class RiskConfigError(ValueError):
    """A risk block that fails validation. `errors` lists {field, message}."""

    def __init__(self, message: str, errors: list[dict] | None = None):
        super().__init__(message)
        self.errors = errors or []


# Upper bounds: a limit past these is not a limit but a typo (starting cash is at most 1e12).
MAX_AMOUNT = 1e15
MAX_ORDERS_PER_MINUTE = 1_000_000


class RiskBlock(BaseModel):
    """The bot's risk block. Every limit is optional; unknown keys are refused.

    Validated strictly: a number is a JSON number ("2", true and 1.5 orders are refused),
    and every limit is bounded.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    max_position_units: float | None = Field(None, gt=0, le=MAX_AMOUNT, description="largest absolute position, in units")
    max_position_pct: float | None = Field(None, gt=0, le=10_000, description="largest position value, % of equity")
    max_order_notional: float | None = Field(None, gt=0, le=MAX_AMOUNT, description="largest single order, in quote currency")
    max_drawdown_pct: float | None = Field(None, gt=0, le=100, description="peak-to-trough equity loss, %")
    max_daily_loss: float | None = Field(None, gt=0, le=MAX_AMOUNT, description="loss since the UTC day's start, in quote currency")
    max_daily_loss_pct: float | None = Field(None, gt=0, le=100, description="loss since the UTC day's start, % of that day's starting equity")
    max_orders_per_minute: int | None = Field(None, gt=0, le=MAX_ORDERS_PER_MINUTE, description="orders placed in any trailing 60 s of bar time")
    max_leverage: float | None = Field(None, gt=0, le=100, description="gross exposure / equity")


# Reason codes, stable for the API, the ledger and the frames.
LIMIT_NAMES = tuple(RiskBlock.model_fields)


@dataclass(frozen=True)
class RiskBreach:
    limit: str
    observed: float
    threshold: float
    ts: int
    bar_index: int
    when: str  # "pre_trade" or "post_bar"

    @property
    def message(self) -> str:
        return (
            f"{self.limit} breached: observed {self.observed:.6g} > threshold {self.threshold:.6g}"
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["message"] = self.message
        return d


def parse_risk_block(block: dict | None) -> RiskBlock:
    if block is None:
        return RiskBlock()
    if not isinstance(block, dict):
        raise RiskConfigError("risk block must be an object", [{"field": "risk", "message": "must be an object"}])
    try:
        return RiskBlock.model_validate(block, strict=True)
    except ValidationError as exc:
        errors = [
            {"field": "risk." + ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
            for e in exc.errors()
        ]
        text = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise RiskConfigError(f"invalid risk block: {text}", errors) from None


class RiskLimits:
    """Checks orders before they reach the broker and the account after every bar.

    The first breach latches: `halted` stays true and every later order is refused with it.
    """

    __slots__ = (
        "block", "breach", "_recent_orders",
        "_units", "_pos_pct", "_notional", "_dd", "_daily", "_daily_pct", "_opm", "_lev",
        "has_bar_checks",
    )

    def __init__(self, block: RiskBlock):
        self.block = block
        self.breach: RiskBreach | None = None
        self._recent_orders: deque[int] = deque()
        self._units = block.max_position_units
        self._pos_pct = block.max_position_pct
        self._notional = block.max_order_notional
        self._dd = block.max_drawdown_pct
        self._daily = block.max_daily_loss
        self._daily_pct = block.max_daily_loss_pct
        self._opm = block.max_orders_per_minute
        self._lev = block.max_leverage
        self.has_bar_checks = any(
            x is not None for x in (self._dd, self._daily, self._daily_pct, self._pos_pct, self._lev)
        )

    @classmethod
    def from_block(cls, block: dict | None) -> RiskLimits:
        return cls(parse_risk_block(block))

    def to_block(self) -> dict:
        return self.block.model_dump(exclude_none=True)

    @property
    def halted(self) -> bool:
        return self.breach is not None

    def latch(self, breach: RiskBreach) -> RiskBreach:
        if self.breach is None:
            self.breach = breach
        return self.breach

    def check_order(
        self,
        *,
        signed_qty: float,
        price: float,
        position: float,
        pending: float,
        equity: float,
        ts: int,
        bar_index: int,
    ) -> RiskBreach | None:
        """Pre-trade: would this order (on top of the position and pending orders) breach a limit?

        Returns the latched breach when already halted. A new breach is latched and returned.
        """
        if self.breach is not None:
            return self.breach

        def breach(limit: str, observed: float, threshold: float) -> RiskBreach:
            return self.latch(RiskBreach(limit, float(observed), float(threshold), ts, bar_index, "pre_trade"))

        if self._opm is not None:
            recent = self._recent_orders
            while recent and recent[0] <= ts - 60:
                recent.popleft()
            if len(recent) + 1 > self._opm:
                return breach("max_orders_per_minute", len(recent) + 1, self._opm)
        notional = abs(signed_qty) * price
        if self._notional is not None and notional > self._notional:
            return breach("max_order_notional", notional, self._notional)
        new_position = position + pending + signed_qty
        if self._units is not None and abs(new_position) > self._units:
            return breach("max_position_units", abs(new_position), self._units)
        exposure = abs(new_position) * price
        if self._pos_pct is not None:
            pct = exposure / equity * 100 if equity > 0 else float("inf")
            if pct > self._pos_pct:
                return breach("max_position_pct", pct, self._pos_pct)
        if self._lev is not None:
            lev = exposure / equity if equity > 0 else float("inf")
            if lev > self._lev:
                return breach("max_leverage", lev, self._lev)
        self._recent_orders.append(ts)
        return None

    def check_bar(
        self,
        *,
        equity: float,
        peak_equity: float,
        day_start_equity: float,
        exposure: float,
        ts: int,
        bar_index: int,
    ) -> RiskBreach | None:
        """Post-bar: drawdown, daily loss, position % and leverage on the marked-to-market account."""
        if self.breach is not None:
            return self.breach

        def breach(limit: str, observed: float, threshold: float) -> RiskBreach:
            return self.latch(RiskBreach(limit, float(observed), float(threshold), ts, bar_index, "post_bar"))

        if self._dd is not None and peak_equity > 0:
            dd = (peak_equity - equity) / peak_equity * 100
            if dd > self._dd:
                return breach("max_drawdown_pct", dd, self._dd)
        loss = day_start_equity - equity
        if self._daily is not None and loss > self._daily:
            return breach("max_daily_loss", loss, self._daily)
        if self._daily_pct is not None and day_start_equity > 0:
            pct = loss / day_start_equity * 100
            if pct > self._daily_pct:
                return breach("max_daily_loss_pct", pct, self._daily_pct)
        if exposure:
            if self._pos_pct is not None:
                pct = exposure / equity * 100 if equity > 0 else float("inf")
                if pct > self._pos_pct:
                    return breach("max_position_pct", pct, self._pos_pct)
            if self._lev is not None:
                lev = exposure / equity if equity > 0 else float("inf")
                if lev > self._lev:
                    return breach("max_leverage", lev, self._lev)
        return None
