"""Performance metrics for a finished run: round-trip trades from fills, and summary statistics.

Annualized per bar: 365 * 86400 / bar seconds periods a year (24/7 crypto), risk-free 0.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from paper.engine.bars import SECONDS_PER_YEAR, periods_per_year, timeframe_seconds
from paper.engine.orders import Fill

# Kept identical to empyrical's conventions so every ratio can be checked against it.
CONVENTIONS = """\
Returns: simple per-bar returns of the equity curve, r[i] = equity[i] / equity[i-1] - 1, where
the bar before the first is starting_cash, so r[0] = equity[0] / starting_cash - 1. There is one
return per bar (len(r) == len(equity)) and costs paid on the first bar are not lost. Once equity
is <= 0 the account is wiped out and later returns are undefined; they count as 0.
Annualization: periods per year = 365 * 86400 / bar seconds, because crypto trades 24/7
(365 for 1d, 8760 for 1h, 525,600 for 1m); Sharpe and Sortino scale by sqrt(periods per year).
Risk-free rate and Sortino's required return are 0.
Sharpe: mean(r) / std(r, ddof=1) * sqrt(ppy); 0.0 with fewer than 2 returns or zero dispersion
(std <= 1e-12, i.e. float rounding noise).
Sortino: mean(r) / sqrt(mean(min(r, 0)^2)) * sqrt(ppy), the downside deviation taken over ALL
returns; None when it is 0 (<= 1e-12) or there are fewer than 2 returns.
Drawdown: positive fraction from a running peak that starts at starting_cash (1.0 when equity
reaches 0, above 1 if it goes negative); duration is the longest run of consecutive bars
closing below the running peak.
CAGR: over calendar time, years = (ts[-1] - ts[0] + bar seconds) / (365 * 86400).
"""

# A per-bar return is a ratio of floats near 1, so it carries absolute rounding noise of ~1e-16.
# A dispersion this small is that noise (a steady 1% a bar has std ~1e-17 and would otherwise
# report a Sharpe of 1e15), never a real strategy, and is treated as zero.
_NOISE_STD = 1e-12

# Summing float quantities leaves residues like 1e-17 where a position is really flat; anything
# this small relative to the position's scale is treated as zero.
_FLAT_EPS = 1e-9


@dataclass(frozen=True)
class Trade:
    """One round trip: from a flat position until the position is flat again."""

    symbol: str
    side: str  # "long" or "short"
    entry_ts: int
    exit_ts: int
    entry_price: float  # qty-weighted average of the fills that grew the position
    exit_price: float  # qty-weighted average of the fills that shrank it
    qty: float  # largest absolute position held during the trade
    pnl: float  # realized, net of every fee paid by the trade's fills
    fees: float
    bars_held: int
    return_pct: float  # pnl / total entry notional (fraction, 0.05 = 5%)

    def to_dict(self) -> dict:
        return asdict(self)


class _OpenTrade:
    __slots__ = (
        "symbol", "direction", "entry_ts", "entry_bar", "position", "max_abs",
        "entry_qty", "entry_notional", "exit_qty", "exit_notional", "cash", "fees",
    )

    def __init__(self, symbol: str, direction: int, entry_ts: int, entry_bar: int) -> None:
        self.symbol = symbol
        self.direction = direction
        self.entry_ts = entry_ts
        self.entry_bar = entry_bar
        self.position = 0.0
        self.max_abs = 0.0
        self.entry_qty = 0.0
        self.entry_notional = 0.0
        self.exit_qty = 0.0
        self.exit_notional = 0.0
        # Cash flow of the trade's fills; once the position is back to flat it is exactly the
        # gross realized P&L, with no need to pick a cost-basis method.
        self.cash = 0.0
        self.fees = 0.0

    def add(self, signed_qty: float, price: float, fee: float) -> None:
        qty = abs(signed_qty)
        if signed_qty * self.direction > 0:
            self.entry_qty += qty
            self.entry_notional += qty * price
        else:
            self.exit_qty += qty
            self.exit_notional += qty * price
        self.position += signed_qty
        self.cash -= signed_qty * price
        self.fees += fee
        self.max_abs = max(self.max_abs, abs(self.position))

    def close(self, exit_ts: int, exit_bar: int) -> Trade:
        pnl = self.cash - self.fees
        return Trade(
            symbol=self.symbol,
            side="long" if self.direction > 0 else "short",
            entry_ts=int(self.entry_ts),
            exit_ts=int(exit_ts),
            entry_price=self.entry_notional / self.entry_qty,
            exit_price=self.exit_notional / self.exit_qty,
            qty=self.max_abs,
            pnl=pnl,
            fees=self.fees,
            bars_held=int(exit_bar - self.entry_bar),
            return_pct=pnl / self.entry_notional if self.entry_notional else 0.0,
        )


def _walk(fills: Sequence[Fill]) -> tuple[list[Trade], dict[str, _OpenTrade]]:
    by_symbol: dict[str, list[Fill]] = {}
    for f in fills:
        by_symbol.setdefault(f.symbol, []).append(f)

    closed: list[Trade] = []
    still_open: dict[str, _OpenTrade] = {}
    for symbol, symbol_fills in by_symbol.items():
        # Stable sort: fills within one bar keep the order the broker produced them in.
        symbol_fills = sorted(symbol_fills, key=lambda f: f.bar_index)
        cur: _OpenTrade | None = None
        for f in symbol_fills:
            if f.qty <= 0:
                continue
            sq = f.signed_qty
            if cur is None:
                cur = _OpenTrade(symbol, 1 if sq > 0 else -1, f.ts, f.bar_index)
                cur.add(sq, f.price, f.fee)
                continue
            if sq * cur.direction > 0:
                cur.add(sq, f.price, f.fee)
                continue
            held = abs(cur.position)
            tol = _FLAT_EPS * max(cur.max_abs, f.qty)
            if f.qty < held - tol:
                cur.add(sq, f.price, f.fee)
                continue
            if f.qty <= held + tol:
                cur.add(sq, f.price, f.fee)
                closed.append(cur.close(f.ts, f.bar_index))
                cur = None
                continue
            # Flip: the part of the fill that flattens closes this trade; the remainder opens
            # the next one. The fee is split by quantity so neither trade is charged for the other.
            share = held / f.qty
            cur.add(-cur.direction * held, f.price, f.fee * share)
            closed.append(cur.close(f.ts, f.bar_index))
            cur = _OpenTrade(symbol, -cur.direction, f.ts, f.bar_index)
            cur.add(cur.direction * (f.qty - held), f.price, f.fee * (1.0 - share))
        if cur is not None:
            still_open[symbol] = cur

    closed.sort(key=lambda t: (t.exit_ts, t.entry_ts))
    return closed, still_open


def round_trips(fills: Sequence[Fill]) -> list[Trade]:
    """Closed round-trip trades, per symbol, ordered by exit time.

    A trade opens when the position leaves flat and closes when it returns to flat. A fill that
    crosses through flat (long 2, sell 5) closes the trade and opens the opposite one with the
    remainder, its qty and fee split proportionally. Trades still open at the end are omitted
    (see `open_positions`). Fills with non-positive qty are ignored.
    """
    return _walk(fills)[0]


def open_positions(fills: Sequence[Fill]) -> dict[str, dict]:
    """Trades still open after the last fill, by symbol (average-cost entry, fees paid so far)."""
    _, still_open = _walk(fills)
    return {
        symbol: {
            "symbol": symbol,
            "side": "long" if t.direction > 0 else "short",
            "qty": abs(t.position),
            "avg_entry_price": t.entry_notional / t.entry_qty,
            "entry_ts": int(t.entry_ts),
            "fees": t.fees,
        }
        for symbol, t in still_open.items()
    }


def equity_returns(equity: np.ndarray, starting_cash: float) -> np.ndarray:
    """Simple per-bar returns, the first one measured against `starting_cash` (see CONVENTIONS)."""
    equity = np.asarray(equity, dtype=np.float64)
    prev = np.concatenate(([float(starting_cash)], equity))[:-1]
    ok = prev > 0
    out = np.zeros_like(equity)
    np.divide(equity, prev, out=out, where=ok)
    out[ok] -= 1.0
    return out


def _sharpe(r: np.ndarray, ppy: float) -> float:
    if r.size < 2:
        return 0.0
    std = float(np.std(r, ddof=1))
    if std <= _NOISE_STD:
        return 0.0
    return float(np.mean(r) / std * math.sqrt(ppy))


def _sortino(r: np.ndarray, ppy: float) -> float | None:
    if r.size < 2:
        return None
    downside = float(np.sqrt(np.mean(np.square(np.minimum(r, 0.0)))))
    if downside <= _NOISE_STD:
        return None
    return float(np.mean(r) / downside * math.sqrt(ppy))


def _drawdown(equity: np.ndarray, starting_cash: float) -> tuple[float, int]:
    """Max drawdown (positive fraction) and the longest run of bars spent below a prior peak."""
    if equity.size == 0:
        return 0.0, 0
    peak = np.maximum.accumulate(np.concatenate(([float(starting_cash)], equity)))[1:]
    # peak >= starting_cash > 0, so the division is always defined.
    max_dd = float(np.max((peak - equity) / peak))
    underwater = (equity < peak).astype(np.int8)
    edges = np.diff(np.concatenate(([0], underwater, [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    longest = int(np.max(ends - starts)) if starts.size else 0
    return max(max_dd, 0.0), longest


def _is_flat(position: np.ndarray) -> np.ndarray:
    scale = float(np.max(np.abs(position))) if position.size else 0.0
    return np.abs(position) <= _FLAT_EPS * scale


def _exposure_from_position(position: np.ndarray, n: int) -> float | None:
    position = np.asarray(position, dtype=np.float64)
    if position.shape[0] != n:
        raise ValueError(f"position has {position.shape[0]} rows, equity has {n}")
    if n == 0:
        return None
    flat = _is_flat(position)
    if flat.ndim > 1:
        # One column per symbol: a bar is exposed if any symbol is held.
        flat = flat.all(axis=tuple(range(1, flat.ndim)))
    return float(np.mean(~flat))


def _exposure_from_fills(fills: Sequence[Fill], n: int) -> float | None:
    """Fraction of bars closing with a non-zero position, reconstructed from fill bar indices."""
    if n == 0:
        return None
    exposed = np.zeros(n, dtype=bool)
    bars = np.arange(n)
    by_symbol: dict[str, list[Fill]] = {}
    for f in fills:
        by_symbol.setdefault(f.symbol, []).append(f)
    for symbol_fills in by_symbol.values():
        symbol_fills = sorted(symbol_fills, key=lambda f: f.bar_index)
        idx = np.fromiter((f.bar_index for f in symbol_fills), dtype=np.int64)
        qty = np.fromiter((f.signed_qty for f in symbol_fills), dtype=np.float64)
        cum = np.cumsum(qty)
        # Position at a bar's close is the running sum through the last fill on or before it.
        last = np.searchsorted(idx, bars, side="right") - 1
        pos = np.where(last >= 0, cum[np.maximum(last, 0)], 0.0)
        flat = np.abs(pos) <= _FLAT_EPS * float(np.max(np.abs(qty)))
        exposed |= ~flat
    return float(np.mean(exposed))


def _cagr(final: float, starting_cash: float, years: float) -> float | None:
    if years <= 0 or final <= 0:
        return None
    # In log space: a short window annualizes to astronomically large numbers, and those are
    # reported as undefined rather than overflowing to inf.
    with np.errstate(over="ignore"):
        value = float(np.expm1(math.log(final / starting_cash) / years))
    return value if math.isfinite(value) else None


def _json_safe(value):
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | np.integer):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else None


def compute_metrics(
    *,
    equity: np.ndarray,
    ts: np.ndarray,
    timeframe: str,
    starting_cash: float,
    fills: Sequence[Fill],
    position: np.ndarray | None = None,
) -> dict:
    """Summary statistics of one run; see CONVENTIONS.

    `equity` is the account value at each bar's close, `ts` the bars' open times (epoch s).
    `position` (per bar, 1-D, or bars x symbols) gives exposure; without it exposure is
    rebuilt from the fills' bar indices.
    """
    if not starting_cash > 0:
        raise ValueError(f"starting_cash must be positive, got {starting_cash!r}")
    equity = np.asarray(equity, dtype=np.float64).reshape(-1)
    ts = np.asarray(ts, dtype=np.int64).reshape(-1)
    if equity.shape != ts.shape:
        raise ValueError(f"equity has {equity.size} bars, ts has {ts.size}")
    if not np.all(np.isfinite(equity)):
        raise ValueError("equity contains NaN or inf")
    ppy = periods_per_year(timeframe)
    bar_seconds = timeframe_seconds(timeframe)
    n = int(equity.size)
    starting_cash = float(starting_cash)

    final = float(equity[-1]) if n else starting_cash
    r = equity_returns(equity, starting_cash)
    max_dd, dd_bars = _drawdown(equity, starting_cash)
    years = (int(ts[-1]) - int(ts[0]) + bar_seconds) / SECONDS_PER_YEAR if n else 0.0

    if position is not None:
        exposure = _exposure_from_position(position, n)
    else:
        exposure = _exposure_from_fills(fills, n)

    trades = round_trips(fills)
    pnl = np.array([t.pnl for t in trades], dtype=np.float64)
    wins = pnl[pnl > 0]
    losses = pnl[pnl < 0]
    gross_loss = -float(np.sum(losses))

    out = {
        "total_return": final / starting_cash - 1.0,
        "cagr": _cagr(final, starting_cash, years),
        "sharpe": _sharpe(r, ppy),
        "sortino": _sortino(r, ppy),
        "max_drawdown": max_dd,
        "max_drawdown_duration_bars": dd_bars,
        "win_rate": wins.size / pnl.size if pnl.size else None,
        "profit_factor": float(np.sum(wins)) / gross_loss if gross_loss > 0 else None,
        "exposure": exposure,
        "num_trades": len(trades),
        "num_fills": len(fills),
        "total_fees": float(sum(f.fee for f in fills)),
        "final_equity": final,
        "periods_per_year": ppy,
        "bars": n,
        "avg_trade_pnl": float(np.mean(pnl)) if pnl.size else None,
        "best_trade": float(np.max(pnl)) if pnl.size else None,
        "worst_trade": float(np.min(pnl)) if pnl.size else None,
    }
    return {k: _json_safe(v) for k, v in out.items()}
