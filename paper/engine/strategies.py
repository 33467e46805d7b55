"""The built-in strategies: SMA crossover, RSI mean reversion, Donchian breakout, buy and hold.
All are long/flat and trade only through `ctx.target(exposure)`; none keeps state of its own."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from paper.engine.indicators import highest, lowest, rsi, sma
from paper.engine.strategy import (
    IndicatorSpec,
    Strategy,
    StrategyContext,
    StrategyParams,
    register,
)

# Longest indicator look-back a built-in accepts, in bars.
MAX_WINDOW = 10_000

Exposure = Annotated[
    float,
    Field(
        gt=0, le=1, allow_inf_nan=False, description="Fraction of equity held when long, in (0, 1]."
    ),
]


class _Params(StrategyParams):
    # Strict: "10", 10.0 or true are refused for an int, strings and booleans for a float
    # (an int is still accepted for a float). Extra keys are refused and params are frozen.
    model_config = ConfigDict(strict=True)

    exposure: Exposure = 1.0


def _must_exceed(info: ValidationInfo, value: float, lower: str, upper: str) -> None:
    other = info.data.get(lower)  # absent when that field failed its own validation
    if other is not None and not other < value:
        raise PydanticCustomError(
            "param_order",
            "{lower} must be smaller than {upper}",
            {"lower": lower, "upper": upper},
        )


class _PositionTarget(Strategy):
    """Shared: caches `params.exposure` so `on_bar` reads a plain attribute."""

    def __init__(self, params: StrategyParams | dict | None = None):
        super().__init__(params)
        self._long = float(self.params.exposure)


@register
class SmaCrossover(_PositionTarget):
    name = "sma_crossover"
    description = "Long while the fast SMA of close is above the slow SMA, flat otherwise."

    class Params(_Params):
        fast: int = Field(10, ge=1, le=MAX_WINDOW, description="Fast SMA window, in bars.")
        # validate_default: the order rule must also hold against a defaulted slow (fast=40)
        slow: int = Field(
            30, ge=2, le=MAX_WINDOW, validate_default=True, description="Slow SMA window, in bars."
        )

        @field_validator("slow")
        @classmethod
        def _fast_below_slow(cls, slow: int, info: ValidationInfo) -> int:
            _must_exceed(info, slow, "fast", "slow")
            return slow

    def indicators(self) -> dict[str, IndicatorSpec]:
        return {"fast": sma("close", self.params.fast), "slow": sma("close", self.params.slow)}

    def on_bar(self, ctx: StrategyContext) -> None:
        fast = ctx.ind("fast")
        slow = ctx.ind("slow")
        if fast > slow:
            ctx.target(self._long)
        elif fast <= slow:  # both comparisons are False while either is NaN: do nothing
            ctx.target(0.0)


@register
class RsiMeanReversion(_PositionTarget):
    name = "rsi_mean_reversion"
    description = "Long when Cutler's RSI of close falls below oversold, flat above overbought."

    class Params(_Params):
        window: int = Field(14, ge=1, le=MAX_WINDOW, description="RSI window, in price changes.")
        oversold: float = Field(
            30.0, gt=0, lt=100, allow_inf_nan=False, description="Go long below this RSI."
        )
        overbought: float = Field(
            70.0,
            gt=0,
            lt=100,
            validate_default=True,
            allow_inf_nan=False,
            description="Go flat above this RSI.",
        )

        @field_validator("overbought")
        @classmethod
        def _oversold_below_overbought(cls, overbought: float, info: ValidationInfo) -> float:
            _must_exceed(info, overbought, "oversold", "overbought")
            return overbought

    def __init__(self, params: StrategyParams | dict | None = None):
        super().__init__(params)
        self._oversold = float(self.params.oversold)
        self._overbought = float(self.params.overbought)

    def indicators(self) -> dict[str, IndicatorSpec]:
        return {"rsi": rsi("close", self.params.window)}

    def on_bar(self, ctx: StrategyContext) -> None:
        value = ctx.ind("rsi")
        if value < self._oversold:
            ctx.target(self._long)
        elif value > self._overbought:
            ctx.target(0.0)
        # in between (or NaN during warm-up): keep the current target


@register
class DonchianBreakout(_PositionTarget):
    name = "donchian_breakout"
    description = (
        "Long when close breaks the prior entry-window high, flat below the exit-window low."
    )

    class Params(_Params):
        entry_window: int = Field(
            20, ge=1, le=MAX_WINDOW, description="Breakout channel (highest high), in bars."
        )
        exit_window: int = Field(
            10, ge=1, le=MAX_WINDOW, description="Exit channel (lowest low), in bars."
        )

    def indicators(self) -> dict[str, IndicatorSpec]:
        return {
            "upper": highest("high", self.params.entry_window),
            "lower": lowest("low", self.params.exit_window),
        }

    def on_bar(self, ctx: StrategyContext) -> None:
        # The previous bar's channels: the current bar's own high/low always contain its close.
        close = ctx.close()
        if close > ctx.ind("upper", 1):
            ctx.target(self._long)
        elif close < ctx.ind("lower", 1):
            ctx.target(0.0)


@register
class BuyAndHold(_PositionTarget):
    name = "buy_and_hold"
    description = "Buys on the first bar and holds to the end."

    class Params(_Params):
        pass

    def on_bar(self, ctx: StrategyContext) -> None:
        ctx.target(self._long)  # only the first call trades: target() ignores an unchanged exposure
