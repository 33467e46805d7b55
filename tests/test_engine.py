"""The engine end to end: determinism, no lookahead, and one engine for backtests and sessions."""
from __future__ import annotations

import numpy as np
import pytest

from paper.engine.botconfig import BotConfig
from paper.engine.engine import Engine
from paper.engine.indicators import indicator, sma
from paper.engine.strategy import IndicatorSpec, LookaheadError, Strategy, registered_strategies
from paper.engine.synthetic import synthetic_bars

BUILTINS = ["sma_crossover", "rsi_mean_reversion", "donchian_breakout", "buy_and_hold"]


def config_for(strategy: str, **kw) -> BotConfig:
    return BotConfig.validate(strategy=strategy, symbols=[kw.pop("symbol", "ETH-USD")],
                              timeframe=kw.pop("timeframe", "1d"), **kw)


def test_it_registers_the_four_builtins():
    assert set(BUILTINS) <= set(registered_strategies())


@pytest.mark.parametrize("strategy", BUILTINS)
def test_it_is_byte_identical_for_the_same_config_and_seed(strategy, eth_bars):
    config = config_for(strategy, execution={"slippage_jitter_bps": 3.0})
    runs = [config.build_engine(starting_cash=100_000, seed=11).run(eth_bars) for _ in range(2)]
    assert runs[0].num_fills > 0
    assert runs[0].fills_bytes() == runs[1].fills_bytes()
    assert runs[0].equity.tobytes() == runs[1].equity.tobytes()


def test_a_different_seed_changes_jittered_fills(eth_bars):
    config = config_for("sma_crossover", execution={"slippage_jitter_bps": 3.0})
    a = config.build_engine(starting_cash=100_000, seed=1).run(eth_bars)
    b = config.build_engine(starting_cash=100_000, seed=2).run(eth_bars)
    assert a.fills_bytes() != b.fills_bytes()


def test_the_global_random_state_does_not_matter(eth_bars):
    config = config_for("sma_crossover", execution={"slippage_jitter_bps": 3.0})
    np.random.seed(1)
    a = config.build_engine(starting_cash=100_000, seed=5).run(eth_bars)
    np.random.seed(999)
    np.random.random(1000)
    b = config.build_engine(starting_cash=100_000, seed=5).run(eth_bars)
    assert a.fills_bytes() == b.fills_bytes()


@pytest.mark.parametrize("strategy", BUILTINS)
def test_a_session_fed_bar_by_bar_gives_the_backtests_fills(strategy, eth_bars):
    """Live sessions call extend() one bar at a time; backtests call run() once."""
    bars = eth_bars.slice(0, 400)
    config = config_for(strategy)
    backtest = config.build_engine(starting_cash=50_000, seed=3).run(bars)
    live = config.build_engine(starting_cash=50_000, seed=3)
    for i in range(len(bars)):
        live.extend(bars.slice(i, i + 1))
    session = live.result()
    assert backtest.num_fills > 0
    assert session.fills_bytes() == backtest.fills_bytes()
    assert session.equity.tobytes() == backtest.equity.tobytes()


@pytest.mark.parametrize("strategy", BUILTINS)
def test_decisions_up_to_a_bar_do_not_depend_on_later_bars(strategy, eth_bars):
    """Cut the data at k: every fill and equity point before k is unchanged."""
    config = config_for(strategy)
    full = config.build_engine(starting_cash=100_000, seed=0).run(eth_bars)
    for k in (120, 500, 1300):
        cut = config.build_engine(starting_cash=100_000, seed=0).run(eth_bars.slice(0, k))
        assert [f for f in full.fills if f.bar_index < k] == cut.fills
        assert full.equity[:k].tobytes() == cut.equity.tobytes()


class Peeker(Strategy):
    """Tries every door to the future the context offers."""

    name = "peeker"
    attempts: list

    def indicators(self):
        return {"ma": sma("close", 3)}

    def on_bar(self, ctx):
        if ctx.i == 10:
            for attempt in (lambda: ctx.ind("ma", lag=-1), lambda: ctx.value("close", -1), lambda: ctx.close(-2)):
                try:
                    attempt()
                except LookaheadError as exc:
                    self.attempts.append(str(exc))
            hist = ctx.history(1000)
            self.attempts.append(len(hist))
            self.attempts.append(hist.base is None or len(hist.base) == len(hist))
            self.attempts.append(len(ctx.indicator_history("ma", 1000)))


def test_a_strategy_cannot_reach_a_future_bar(eth_bars):
    strategy = Peeker()
    strategy.attempts = []
    Engine(strategy=strategy, symbol="ETH-USD", timeframe="1d", starting_cash=1000).run(eth_bars.slice(0, 50))
    errors, hist_len, is_copy, ind_len = strategy.attempts[:3], *strategy.attempts[3:]
    assert all("future" in e for e in errors) and len(errors) == 3
    assert hist_len == 11  # bars 0..10
    assert is_copy  # a copy, not a view whose .base would expose the whole series
    assert ind_len == 11


@indicator("test_centered_mean")
def _centered_mean(cols, source="close", window=5):
    x = cols[source]
    return np.convolve(x, np.ones(window) / window, mode="same")  # uses bars after i


class CheatingIndicator(Strategy):
    name = "cheater"

    def indicators(self):
        return {"c": IndicatorSpec("test_centered_mean", {"source": "close", "window": 5})}

    def on_bar(self, ctx):
        ctx.target(1.0 if ctx.close() < ctx.ind("c") else 0.0)


def test_a_custom_indicator_that_peeks_ahead_is_refused(eth_bars):
    engine = Engine(strategy=CheatingIndicator(), symbol="ETH-USD", timeframe="1d", starting_cash=1000)
    with pytest.raises(ValueError, match="not causal"):
        engine.run(eth_bars.slice(0, 200))


def test_orders_still_open_at_the_end_are_reported_open():
    bars = synthetic_bars("SYN-USD", "1h", 30, seed=1)

    class FarLimit(Strategy):
        name = "far_limit"

        def on_bar(self, ctx):
            if ctx.i == 2:
                ctx.buy(1.0, type="limit", limit=ctx.close() * 0.5)

    result = Engine(strategy=FarLimit(), symbol="SYN-USD", timeframe="1h", starting_cash=10_000).run(bars)
    assert [o.status.value for o in result.open_orders] == ["accepted"]
    assert result.status == "completed"


def test_stop_latches_and_cancels_open_orders(eth_bars):
    config = config_for("sma_crossover")
    engine = config.build_engine(starting_cash=10_000, seed=0)
    engine.extend(eth_bars.slice(0, 100))
    engine.stop("kill switch")
    assert engine.extend(eth_bars.slice(100, 110)) == 0
    result = engine.result()
    assert result.status == "stopped" and result.stop_reason == "kill switch"
    assert not result.open_orders


@pytest.mark.parametrize("strategy", BUILTINS)
def test_warmup_bars_feed_indicators_but_never_trade(strategy, eth_bars):
    config = config_for(strategy)
    warm, live_bars = eth_bars.slice(0, 200), eth_bars.slice(200, 320)
    backtest = config.build_engine(starting_cash=10_000, seed=1)
    backtest.warmup(warm)
    expected = backtest.run(live_bars)
    session = config.build_engine(starting_cash=10_000, seed=1)
    session.warmup(warm)
    for i in range(len(live_bars)):
        session.extend(live_bars.slice(i, i + 1))
    got = session.result()
    assert got.fills_bytes() == expected.fills_bytes()
    assert len(got.equity) == 120 and got.bar_offset == 200
    assert all(f.bar_index >= 200 for f in got.fills)
    assert got.ts[0] == live_bars.ts[0]


def test_warmup_after_the_first_bar_is_refused(eth_bars):
    engine = config_for("sma_crossover").build_engine(starting_cash=1000, seed=0)
    engine.extend(eth_bars.slice(0, 5))
    with pytest.raises(RuntimeError):
        engine.warmup(eth_bars.slice(5, 10))


@pytest.mark.parametrize("strategy", BUILTINS)
def test_preload_then_advance_in_steps_gives_the_same_fills(strategy, eth_bars):
    config = config_for(strategy)
    expected = config.build_engine(starting_cash=10_000, seed=2).run(eth_bars)
    engine = config.build_engine(starting_cash=10_000, seed=2)
    engine.preload(eth_bars)
    while engine.advance(333):
        pass
    got = engine.result()
    assert got.fills_bytes() == expected.fills_bytes()
    assert got.equity.tobytes() == expected.equity.tobytes()
    with pytest.raises(RuntimeError):
        fresh = config.build_engine(starting_cash=10_000, seed=2)
        fresh.preload(eth_bars.slice(0, 10))
        fresh.extend(eth_bars.slice(10, 20))
