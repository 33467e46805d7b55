"""A bot's trading configuration: validation, the canonical form, its hash, and its engine.

The Django Bot model, backtests and paper sessions all go through here, so one config
always means one engine and one hash.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass

from pydantic import ValidationError

from paper.engine.bars import TIMEFRAME_SECONDS
from paper.engine.broker import ExecutionConfig
from paper.engine.engine import Engine, EventSink
from paper.engine.strategy import StrategyConfigError, build_strategy
from risk.limits import RiskConfigError, RiskLimits, parse_risk_block

SYMBOL_RE = re.compile(r"^[A-Z0-9][A-Z0-9._:/-]{0,31}$")
# A registered name, or a dotted path `pkg.mod:Class` / `pkg.mod.Class`, checked before any import
# is attempted (a path of thousands of dots made importlib recurse until the interpreter gave up).
STRATEGY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*){0,15}(?::[A-Za-z_][A-Za-z0-9_]*)?$")
STRATEGY_MAX_LENGTH = 200
MAX_SYMBOLS = 100
# params, risk and execution are stored as JSON (PostgreSQL jsonb); what JSON or jsonb cannot
# hold, or what no config needs, is refused here, whichever surface the config came from.
MAX_JSON_DEPTH = 32


class BotConfigError(ValueError):
    """Invalid bot configuration. `errors` is a list of {field, message}."""

    def __init__(self, errors: list[dict]):
        self.errors = errors
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))


def _shown(value, limit: int = 40) -> str:
    """repr(value) for an error message, cut so a megabyte of input is not echoed back."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _json_problem(value, path: str, depth: int = 0) -> tuple[str, str] | None:
    """The first (field, reason) why `value` cannot be a stored config value, or None."""
    if depth > MAX_JSON_DEPTH:
        return path, f"nested more than {MAX_JSON_DEPTH} levels deep"
    if isinstance(value, float) and not math.isfinite(value):
        return path, "must be a finite number"
    if isinstance(value, str) and "\x00" in value:
        return path, "must not contain NUL characters"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return path, f"keys must be strings, not {type(key).__name__}"
            if "\x00" in key:
                return path, "keys must not contain NUL characters"
            problem = _json_problem(item, f"{path}.{key}", depth + 1)
            if problem:
                return problem
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            problem = _json_problem(item, f"{path}[{i}]", depth + 1)
            if problem:
                return problem
    elif value is not None and not isinstance(value, (str, int, float, bool)):
        return path, f"must be JSON (not {type(value).__name__})"
    return None


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
        blocks = {"params": params, "risk": risk, "execution": execution}
        unstorable = {name for name, block in blocks.items() if _json_problem(block, name)}
        for name in unstorable:
            field, reason = _json_problem(blocks[name], name)
            errors.append({"field": name, "message": f"{field}: {reason}"})
        if not isinstance(strategy, str) or not strategy:
            errors.append({"field": "strategy", "message": "a strategy name or dotted path is required"})
        elif len(strategy) > STRATEGY_MAX_LENGTH or not STRATEGY_RE.match(strategy):
            errors.append({"field": "strategy", "message": f"{_shown(strategy)} is not a strategy name or dotted path "
                                                           f"(e.g. sma_crossover or mypkg.strategies:MyStrategy, "
                                                           f"at most {STRATEGY_MAX_LENGTH} characters)"})
        elif "params" not in unstorable:
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
        elif len(symbols) > MAX_SYMBOLS:
            errors.append({"field": "symbols", "message": f"at most {MAX_SYMBOLS} symbols, got {len(symbols)}"})
            symbols = ()
        else:
            bad = [s for s in symbols if not isinstance(s, str) or not SYMBOL_RE.match(s)]
            errors.extend({"field": "symbols", "message": f"invalid symbol {_shown(s)} (use e.g. ETH-USD)"} for s in bad)
            if not bad and len(set(symbols)) != len(symbols):
                errors.append({"field": "symbols", "message": "symbols must be unique"})
        if not isinstance(timeframe, str) or timeframe not in TIMEFRAME_SECONDS:
            errors.append({"field": "timeframe", "message": f"unknown timeframe {_shown(timeframe)}; known: {', '.join(TIMEFRAME_SECONDS)}"})
        norm_risk: dict = {}
        if "risk" not in unstorable:
            try:
                norm_risk = parse_risk_block(risk).model_dump(exclude_none=True)
            except RiskConfigError as exc:
                errors.extend(exc.errors or [{"field": "risk", "message": str(exc)}])
        norm_exec: dict = {}
        if "execution" in unstorable:
            pass
        elif execution is not None and not isinstance(execution, dict):
            errors.append({"field": "execution", "message": "execution block must be an object"})
        else:
            try:
                # Strict, like the risk block: "2" or "true" is not a number or a flag.
                norm_exec = ExecutionConfig.model_validate(execution or {}, strict=True).model_dump()
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
