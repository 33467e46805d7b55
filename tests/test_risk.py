"""Risk limits: each breach halts the run with the limit's name, the observed value and the threshold."""
from __future__ import annotations

import pytest

from paper.engine.botconfig import BotConfig
from paper.engine.engine import Engine
from paper.engine.strategy import Strategy
from paper.engine.synthetic import synthetic_bars
from risk.limits import RiskConfigError, RiskLimits


class Script(Strategy):
    """Places the given (bar, side, qty) orders; optional target exposure from bar 1."""

    name = "script"

    def __init__(self, orders=(), target=None):
        super().__init__({})
        self.orders = {b: (s, q) for b, s, q in orders}
        self.target_exposure = target

    def on_bar(self, ctx):
        if self.target_exposure is not None and ctx.i >= 1:
            ctx.target(self.target_exposure)
        if ctx.i in self.orders:
            side, qty = self.orders[ctx.i]
            (ctx.buy if side == "buy" else ctx.sell)(qty)


def run(block, strategy, bars, cash=10_000.0, allow_short=False):
    from paper.engine.broker import ExecutionConfig

    return Engine(strategy=strategy, symbol=bars.symbol, timeframe=bars.timeframe, starting_cash=cash,
                  risk=RiskLimits.from_block(block), execution=ExecutionConfig(allow_short=allow_short)).run(bars)


def crash_bars(n=40, drop_at=10, factor=0.5):
    """Flat at 100, then one bar that falls to 100*factor and stays."""
    bars = synthetic_bars("TST", "1h", n, seed=0)
    price = [100.0 if i < drop_at else 100.0 * factor for i in range(n)]
    return type(bars).from_columns(symbol="TST", timeframe="1h", ts=bars.ts, open=price, high=price,
                                   low=price, close=price, volume=[1e6] * n)


BREACHES = [
    # (limit block, strategy, observed check)
    ({"max_position_units": 5}, Script([(2, "buy", 6)]), "max_position_units", 6, 5),
    ({"max_order_notional": 500}, Script([(2, "buy", 6)]), "max_order_notional", 600, 500),
    ({"max_position_pct": 50}, Script([(2, "buy", 60)]), "max_position_pct", 60, 50),
    ({"max_leverage": 0.5}, Script([(2, "buy", 60)]), "max_leverage", 0.6, 0.5),
    ({"max_orders_per_minute": 2}, Script([(2, "buy", 1), (3, "buy", 1)]), None, None, None),
    ({"max_drawdown_pct": 20}, Script(target=1.0), "max_drawdown_pct", None, 20),
    ({"max_daily_loss": 1000}, Script(target=1.0), "max_daily_loss", None, 1000),
    ({"max_daily_loss_pct": 10}, Script(target=1.0), "max_daily_loss_pct", None, 10),
]


@pytest.mark.parametrize("block,strategy,limit,observed,threshold", BREACHES, ids=[b[0] and next(iter(b[0])) for b in BREACHES])
def test_each_limit_halts_the_run(block, strategy, limit, observed, threshold):
    bars = crash_bars()
    result = run(block, strategy, bars)
    if limit is None:  # max_orders_per_minute on 1h bars: two orders are an hour apart, no breach
        assert result.status == "completed"
        return
    assert result.status == "halted"
    halt = result.halt
    assert halt.limit == limit
    assert halt.threshold == pytest.approx(threshold)
    if observed is not None:
        assert halt.observed == pytest.approx(observed, rel=1e-3)
    assert halt.observed > halt.threshold
    assert limit in halt.message and "observed" in halt.message and "threshold" in halt.message


def test_orders_per_minute_breaches_within_sixty_seconds():
    bars = synthetic_bars("TST", "1m", 30, seed=0)
    result = run({"max_orders_per_minute": 2}, Script([(2, "buy", 1), (3, "buy", 1), (4, "buy", 1)]), bars, cash=1e7)
    # bars are 60 s apart, so the trailing minute holds one earlier order at most
    assert result.status == "completed"
    bars = synthetic_bars("TST", "1m", 30, seed=0)

    class Burst(Strategy):
        name = "burst"

        def on_bar(self, ctx):
            if ctx.i == 3:
                for _ in range(3):
                    ctx.buy(0.01)

    result = run({"max_orders_per_minute": 2}, Burst(), bars, cash=1e7)
    assert result.status == "halted"
    assert result.halt.limit == "max_orders_per_minute"
    assert (result.halt.observed, result.halt.threshold) == (3, 2)


def test_a_pre_trade_breach_rejects_the_order_with_the_reason():
    result = run({"max_position_units": 5}, Script([(2, "buy", 6)]), crash_bars())
    (order,) = result.orders
    assert order.status.value == "rejected"
    assert order.reason.startswith("risk: max_position_units breached")
    assert result.num_fills == 0


def test_the_halt_latches_no_order_after_it():
    bars = crash_bars(drop_at=5, factor=0.7)
    result = run({"max_drawdown_pct": 20}, Script([(2, "buy", 90), (8, "buy", 1), (9, "buy", 1)]), bars)
    assert result.status == "halted"
    halt_bar = result.halt.bar_index
    assert all(o.created_bar <= halt_bar for o in result.orders)
    assert all(f.bar_index <= halt_bar for f in result.fills)
    assert len(result.equity) == halt_bar + 1  # the run ends on the halt bar


def test_halt_blocks_later_checks_through_the_latch():
    limits = RiskLimits.from_block({"max_order_notional": 10})
    first = limits.check_order(signed_qty=1, price=100, position=0, pending=0, equity=1000, ts=0, bar_index=0)
    again = limits.check_order(signed_qty=0.001, price=1, position=0, pending=0, equity=1000, ts=60, bar_index=1)
    assert limits.halted and again is first


def test_no_limits_means_no_halt(eth_bars):
    config = BotConfig.validate(strategy="sma_crossover", symbols=["ETH-USD"], timeframe="1d")
    assert config.build_engine(starting_cash=1000, seed=0).run(eth_bars).status == "completed"


@pytest.mark.parametrize("block,field", [
    ({"max_drawdown_pct": -1}, "risk.max_drawdown_pct"),
    ({"max_drawdown_pct": 150}, "risk.max_drawdown_pct"),
    ({"max_leverage": "lots"}, "risk.max_leverage"),
    ({"max_position_units": float("nan")}, "risk.max_position_units"),
    ({"max_order_notional": float("inf")}, "risk.max_order_notional"),
    ({"max_orders_per_minute": 1.5}, "risk.max_orders_per_minute"),
    ({"stop_loss": 5}, "risk.stop_loss"),
])
def test_a_bad_risk_block_is_refused_naming_the_field(block, field):
    with pytest.raises(RiskConfigError) as exc:
        RiskLimits.from_block(block)
    assert field in [e["field"] for e in exc.value.errors]
