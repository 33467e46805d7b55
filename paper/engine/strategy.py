"""The strategy interface, its registry, and the context a strategy sees on every bar.

A strategy declares its indicators (computed by the engine, vectorized and causal) and
reacts in `on_bar(ctx)`. The context only ever shows bars up to and including the
current one: asking for a future value raises LookaheadError.
"""
from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from paper.engine.orders import Order, OrderRequest, OrderType, Side, TimeInForce

if TYPE_CHECKING:  # pragma: no cover
    from paper.engine.engine import Engine


class LookaheadError(Exception):
    """A strategy asked for a bar or indicator value it could not have seen yet."""


class StrategyConfigError(ValueError):
    """Unknown strategy, or parameters that fail validation. `errors` lists field messages."""

    def __init__(self, message: str, errors: list[dict] | None = None):
        super().__init__(message)
        self.errors = errors or []


class StrategyParams(BaseModel):
    """Base for every strategy's typed parameters: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class IndicatorSpec:
    """A declared indicator: a function name from `paper.engine.indicators` and its arguments."""

    fn: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def key(self) -> tuple:
        return (self.fn, tuple(sorted(self.kwargs.items())))


class Strategy:
    """Base class. Subclasses set `name`, `Params`, and implement `on_bar`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Params: ClassVar[type[StrategyParams]] = StrategyParams

    def __init__(self, params: StrategyParams | dict | None = None):
        if isinstance(params, self.Params):
            self.params = params
        else:
            self.params = validate_params_for(type(self), params or {})

    def indicators(self) -> dict[str, IndicatorSpec]:
        """Indicators the engine computes for this strategy, by name."""
        return {}

    def on_start(self, ctx: StrategyContext) -> None:  # pragma: no cover - optional hook
        """Called once before the first bar."""

    def on_bar(self, ctx: StrategyContext) -> None:
        raise NotImplementedError


# --- registry ------------------------------------------------------------------

_REGISTRY: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make a strategy available by its `name`."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtins() -> None:
    # Importing the module registers the built-ins.
    importlib.import_module("paper.engine.strategies")


def registered_strategies() -> dict[str, type[Strategy]]:
    _load_builtins()
    return dict(sorted(_REGISTRY.items()))


# Which packages a dotted strategy path may import from: a callable returning package names,
# or None for any (the engine used as a library). The Django app sets it from
# PAPER_STRATEGY_PACKAGES, so a bot config sent to the API cannot make the server import an
# arbitrary module.
allowed_packages: Callable[[], Sequence[str]] | None = None


def _importable(module_name: str) -> bool:
    if allowed_packages is None:
        return True
    return any(module_name == p or module_name.startswith(p + ".") for p in allowed_packages())


def get_strategy_class(name: str) -> type[Strategy]:
    """A registered name (`sma_crossover`) or a dotted path (`pkg.mod:Class` / `pkg.mod.Class`)."""
    _load_builtins()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if "." not in name and ":" not in name:
        known = ", ".join(sorted(_REGISTRY))
        raise StrategyConfigError(f"unknown strategy {name!r}; known: {known}, or a dotted path")
    module_name, _, attr = name.partition(":") if ":" in name else name.rpartition(".")
    if not _importable(module_name):
        packages = ", ".join(allowed_packages()) or "none"
        raise StrategyConfigError(f"strategy {name!r} is not in an allowed package ({packages}; "
                                  "PAPER_STRATEGY_PACKAGES) and not a built-in")
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise StrategyConfigError(f"cannot load strategy {name!r}: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise StrategyConfigError(f"{name!r} is not a Strategy subclass")
    return cls


def validate_params_for(cls: type[Strategy], params: dict) -> StrategyParams:
    if not isinstance(params, dict):
        raise StrategyConfigError("strategy params must be an object")
    try:
        return cls.Params.model_validate(params)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]) or "params", "message": e["msg"]}
            for e in exc.errors()
        ]
        text = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise StrategyConfigError(f"invalid params for {cls.name or cls.__name__}: {text}", errors) from None


def build_strategy(name: str, params: dict | None) -> Strategy:
    cls = get_strategy_class(name)
    return cls(validate_params_for(cls, params or {}))


def normalized_params(name: str, params: dict | None) -> dict:
    """Validated params with defaults filled in, as plain JSON-able values."""
    return build_strategy(name, params).params.model_dump(mode="json")


# --- the per-bar context ------------------------------------------------------------

_NAN = math.nan


class StrategyContext:
    """What a strategy sees and does on a bar. `i` is the index of the current bar.

    Values come from bars 0..i only. Nothing here returns a view of the engine's arrays
    (a numpy view would expose the future through `.base`): `history()` returns copies.
    """

    __slots__ = ("i", "_cols", "_ind", "_engine", "_target", "symbol", "timeframe")

    def __init__(self, engine: Engine, cols: dict[str, list], ind: dict[str, list], symbol: str, timeframe: str):
        self.i = -1
        self._cols = cols
        self._ind = ind
        self._engine = engine
        self._target: float | None = None
        self.symbol = symbol
        self.timeframe = timeframe

    # -- reading ------------------------------------------------------------------
    def ind(self, name: str, lag: int = 0) -> float:
        """Indicator `name` at the current bar (lag 0) or `lag` bars back; NaN before warm-up."""
        if lag < 0:
            raise LookaheadError(f"indicator {name!r} at lag {lag}: that bar is in the future")
        j = self.i - lag
        if j < 0:
            return _NAN
        return self._ind[name][j]

    def value(self, column: str = "close", lag: int = 0) -> float:
        """Bar column (open/high/low/close/volume/ts) at the current bar or `lag` bars back."""
        if lag < 0:
            raise LookaheadError(f"{column} at lag {lag}: that bar is in the future")
        j = self.i - lag
        if j < 0:
            return _NAN
        return self._cols[column][j]

    def close(self, lag: int = 0) -> float:
        return self.value("close", lag)

    @property
    def ts(self) -> int:
        return self._cols["ts"][self.i]

    def history(self, n: int, column: str = "close") -> np.ndarray:
        """A copy of the last `n` values of a column, ending at the current bar."""
        if n <= 0:
            raise ValueError("n must be positive")
        lo = max(0, self.i + 1 - n)
        return np.array(self._cols[column][lo : self.i + 1], dtype=np.float64)

    def indicator_history(self, name: str, n: int) -> np.ndarray:
        lo = max(0, self.i + 1 - n)
        return np.array(self._ind[name][lo : self.i + 1], dtype=np.float64)

    # -- account --------------------------------------------------------------------
    @property
    def position(self) -> float:
        return self._engine.broker.portfolio.position

    @property
    def cash(self) -> float:
        return self._engine.broker.portfolio.cash

    @property
    def equity(self) -> float:
        return self._engine.broker.portfolio.equity(self._cols["close"][self.i])

    @property
    def open_orders(self) -> list[Order]:
        return [o for o in self._engine.broker.open_orders]

    # -- acting -----------------------------------------------------------------------
    def target(self, exposure: float) -> None:
        """Hold `exposure` x equity in the symbol (1.0 all in, 0 flat, -1 short).

        Only a change of target trades; holding the same target does not rebalance.
        """
        if exposure != self._target:
            self._target = exposure
            self._engine.on_target(exposure)

    def buy(self, qty: float, *, type: str = "market", limit: float | None = None,
            stop: float | None = None, tif: str = "gtc", client_order_id: str | None = None) -> Order:
        return self._order(Side.BUY, qty, type, limit, stop, tif, client_order_id)

    def sell(self, qty: float, *, type: str = "market", limit: float | None = None,
             stop: float | None = None, tif: str = "gtc", client_order_id: str | None = None) -> Order:
        return self._order(Side.SELL, qty, type, limit, stop, tif, client_order_id)

    def cancel(self, client_order_id: str) -> bool:
        return self._engine.cancel(client_order_id)

    def _order(self, side, qty, type, limit, stop, tif, client_order_id) -> Order:
        request = OrderRequest(
            side=side,
            qty=qty,
            type=OrderType(type),
            limit_price=limit,
            stop_price=stop,
            tif=TimeInForce(tif),
            client_order_id=client_order_id,
        )
        return self._engine.submit(request)
