"""A bot's trading configuration: validation, the canonical form, its hash, and its engine.

The Django Bot model, backtests and paper sessions all go through here, so one config
always means one engine and one hash.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from pydantic import ValidationError

from paper.engine.bars import TIMEFRAME_SECONDS
from paper.engine.broker import ExecutionConfig
from paper.engine.engine import Engine, EventSink
from paper.engine.strategy import StrategyConfigError, build_strategy
from risk.limits import RiskConfigError, RiskLimits, parse_risk_block

SYMBOL_RE = re.compile(r"^[A-Z0-9][A-Z0-9._:/-]{0,31}$")


class BotConfigError(ValueError):
    """Invalid bot configuration. `errors` is a list of {field, message}."""

    def __init__(self, errors: list[dict]):
        self.errors = errors
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))


@dataclass(frozen=True)
class BotConfig:
    strategy: str
    params: dict
    symbols: tuple[str, ...]
    timeframe: str
    risk: dict
    execution: dict

    @classmethod
    def validate(cls, *, strategy, params=None, symbols=None, timeframe="1d", risk=None, execution=None) -> BotConfig:
        """Validate every part, collecting all errors, and return the normalized config."""
        errors: list[dict] = []
        norm_params: dict = {}
        if not isinstance(strategy, str) or not strategy:
            errors.append({"field": "strategy", "message": "a strategy name or dotted path is required"})
        else:
            try:
                norm_params = build_strategy(strategy, params if params is not None else {}).params.model_dump(mode="json")
            except StrategyConfigError as exc:
                if exc.errors:
                    errors.extend({"field": f"params.{e['field']}", "message": e["message"]} for e in exc.errors)
                else:
                    field = "params" if "params" in str(exc) else "strategy"
                    errors.append({"field": field, "message": str(exc)})
        if not isinstance(symbols, (list, tuple)) or not symbols:
            errors.append({"field": "symbols", "message": "at least one symbol is required"})
            symbols = ()
        else:
            for s in symbols:
                if not isinstance(s, str) or not SYMBOL_RE.match(s):
                    errors.append({"field": "symbols", "message": f"invalid symbol {s!r} (use e.g. ETH-USD)"})
            if len(set(symbols)) != len(symbols):
                errors.append({"field": "symbols", "message": "symbols must be unique"})
        if timeframe not in TIMEFRAME_SECONDS:
            errors.append({"field": "timeframe", "message": f"unknown timeframe {timeframe!r}; known: {', '.join(TIMEFRAME_SECONDS)}"})
        norm_risk: dict = {}
        try:
            norm_risk = parse_risk_block(risk).model_dump(exclude_none=True)
        except RiskConfigError as exc:
            errors.extend(exc.errors or [{"field": "risk", "message": str(exc)}])
        norm_exec: dict = {}
        if execution is not None and not isinstance(execution, dict):
            errors.append({"field": "execution", "message": "execution block must be an object"})
        else:
            try:
                norm_exec = ExecutionConfig.model_validate(execution or {}).model_dump()
            except ValidationError as exc:
                errors.extend(
                    {"field": "execution." + ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                    for e in exc.errors()
                )
        if errors:
            raise BotConfigError(errors)
        return cls(
            strategy=strategy,
            params=norm_params,
            symbols=tuple(symbols),
            timeframe=timeframe,
            risk=norm_risk,
            execution=norm_exec,
        )

    def canonical(self) -> dict:
        return {
            "strategy": self.strategy,
            "params": self.params,
            "symbols": list(self.symbols),
            "timeframe": self.timeframe,
            "risk": self.risk,
            "execution": self.execution,
        }

    @property
    def config_hash(self) -> str:
        """sha256 over everything that affects trading, in canonical JSON."""
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def build_engine(self, *, starting_cash: float, seed: int, symbol: str | None = None,
                     on_event: EventSink | None = None) -> Engine:
        symbol = symbol or self.symbols[0]
        if symbol not in self.symbols:
            raise BotConfigError([{"field": "symbol", "message": f"{symbol!r} is not one of the bot's symbols {list(self.symbols)}"}])
        return Engine(
            strategy=build_strategy(self.strategy, self.params),
            symbol=symbol,
            timeframe=self.timeframe,
            starting_cash=starting_cash,
            seed=seed,
            risk=RiskLimits.from_block(self.risk),
            execution=ExecutionConfig.model_validate(self.execution),
            on_event=on_event,
        )
