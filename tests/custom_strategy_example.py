"""A custom strategy loaded by dotted path in the tests (not registered by name).
Also holds attributes that are not strategies, to check they are refused."""

from __future__ import annotations

from pydantic import Field

from paper.engine.indicators import sma
from paper.engine.strategy import IndicatorSpec, Strategy, StrategyContext, StrategyParams


class MyStrat(Strategy):
    name = "my_custom_strat"
    description = "Long while close is above its 5-bar SMA by more than `margin`."

    class Params(StrategyParams):
        margin: float = Field(0.0, ge=0)

    def indicators(self) -> dict[str, IndicatorSpec]:
        return {"ma": sma("close", 5)}

    def on_bar(self, ctx: StrategyContext) -> None:
        ma = ctx.ind("ma")
        if ctx.close() > ma + self.params.margin:
            ctx.target(1.0)
        elif ctx.close() <= ma:
            ctx.target(0.0)


class NotAStrategy:
    name = "not_a_strategy"


NOT_A_CLASS = 42
