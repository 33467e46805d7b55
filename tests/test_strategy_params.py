"""Built-in strategies: typed params (defaults, refusals naming the field), loading by name or
dotted path, and the long/flat decisions each one makes on a scripted series of bars."""

from __future__ import annotations

import math

import numpy as np
import pytest

from paper.engine.indicators import compute_indicator
from paper.engine.strategies import BuyAndHold, DonchianBreakout, RsiMeanReversion, SmaCrossover
from paper.engine.strategy import (
    Strategy,
    StrategyConfigError,
    StrategyContext,
    StrategyParams,
    build_strategy,
    get_strategy_class,
    normalized_params,
    registered_strategies,
)

BUILTINS = {
    "sma_crossover": SmaCrossover,
    "rsi_mean_reversion": RsiMeanReversion,
    "donchian_breakout": DonchianBreakout,
    "buy_and_hold": BuyAndHold,
}

DEFAULTS = {
    "sma_crossover": {"exposure": 1.0, "fast": 10, "slow": 30},
    "rsi_mean_reversion": {"exposure": 1.0, "window": 14, "oversold": 30.0, "overbought": 70.0},
    "donchian_breakout": {"exposure": 1.0, "entry_window": 20, "exit_window": 10},
    "buy_and_hold": {"exposure": 1.0},
}

VALID = [
    ("sma_crossover", {"fast": 1, "slow": 2}),
    ("sma_crossover", {"fast": 50, "slow": 200, "exposure": 0.5}),
    ("sma_crossover", {"slow": 11}),
    ("sma_crossover", {"fast": 29}),
    ("rsi_mean_reversion", {"window": 2, "oversold": 5, "overbought": 95}),
    ("rsi_mean_reversion", {"oversold": 49.5, "overbought": 50.5}),
    ("rsi_mean_reversion", {"oversold": 60}),
    ("donchian_breakout", {"entry_window": 55, "exit_window": 20}),
    ("donchian_breakout", {"entry_window": 1, "exit_window": 1, "exposure": 0.01}),
    ("buy_and_hold", {"exposure": 0.25}),
    ("buy_and_hold", {"exposure": 1}),  # an int is fine for a float
]

# (strategy, params, field the error must name)
INVALID = [
    # unknown keys
    ("sma_crossover", {"fast": 5, "slow": 20, "sloww": 3}, "sloww"),
    ("rsi_mean_reversion", {"period": 14}, "period"),
    ("donchian_breakout", {"window": 20}, "window"),
    ("buy_and_hold", {"qty": 1}, "qty"),
    # wrong types
    ("sma_crossover", {"fast": "10"}, "fast"),
    ("sma_crossover", {"fast": 10.0}, "fast"),
    ("sma_crossover", {"slow": 30.5}, "slow"),
    ("sma_crossover", {"fast": True}, "fast"),
    ("sma_crossover", {"slow": None}, "slow"),
    ("rsi_mean_reversion", {"window": [14]}, "window"),
    ("rsi_mean_reversion", {"oversold": "30"}, "oversold"),
    ("donchian_breakout", {"entry_window": "20"}, "entry_window"),
    ("buy_and_hold", {"exposure": "1"}, "exposure"),
    ("buy_and_hold", {"exposure": True}, "exposure"),
    # out of range
    ("sma_crossover", {"fast": 0}, "fast"),
    ("sma_crossover", {"fast": -5}, "fast"),
    ("sma_crossover", {"fast": 1, "slow": 1}, "slow"),
    ("sma_crossover", {"fast": 10, "slow": 10_001}, "slow"),
    ("rsi_mean_reversion", {"window": 0}, "window"),
    ("rsi_mean_reversion", {"oversold": 0}, "oversold"),
    ("rsi_mean_reversion", {"oversold": -1}, "oversold"),
    ("rsi_mean_reversion", {"overbought": 100}, "overbought"),
    ("rsi_mean_reversion", {"oversold": math.nan}, "oversold"),
    ("donchian_breakout", {"entry_window": 0}, "entry_window"),
    ("donchian_breakout", {"exit_window": -1}, "exit_window"),
    ("buy_and_hold", {"exposure": 0}, "exposure"),
    ("buy_and_hold", {"exposure": 1.5}, "exposure"),
    ("buy_and_hold", {"exposure": -1}, "exposure"),
    ("buy_and_hold", {"exposure": math.inf}, "exposure"),
    ("sma_crossover", {"exposure": math.nan}, "exposure"),
]

# Cross-field rules: (strategy, params, field, message)
ORDER_RULES = [
    ("sma_crossover", {"fast": 30, "slow": 30}, "slow", "fast must be smaller than slow"),
    ("sma_crossover", {"fast": 50, "slow": 20}, "slow", "fast must be smaller than slow"),
    ("sma_crossover", {"fast": 31}, "slow", "fast must be smaller than slow"),  # default slow 30
    ("sma_crossover", {"slow": 10}, "slow", "fast must be smaller than slow"),  # default fast 10
    (
        "rsi_mean_reversion",
        {"oversold": 70, "overbought": 70},
        "overbought",
        "oversold must be smaller than overbought",
    ),
    (
        "rsi_mean_reversion",
        {"oversold": 80},
        "overbought",
        "oversold must be smaller than overbought",
    ),
    (
        "rsi_mean_reversion",
        {"overbought": 20},
        "overbought",
        "oversold must be smaller than overbought",
    ),
]


# --- the registry -------------------------------------------------------------------------------


def test_builtins_are_registered() -> None:
    registered = registered_strategies()
    for name, cls in BUILTINS.items():
        assert registered[name] is cls
        assert get_strategy_class(name) is cls
        assert cls.name == name


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_metadata(name: str) -> None:
    cls = BUILTINS[name]
    assert cls.description and "\n" not in cls.description
    assert issubclass(cls.Params, StrategyParams)
    assert issubclass(cls, Strategy)


# --- params ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTINS)
def test_defaults_accepted_and_normalized(name: str) -> None:
    assert normalized_params(name, {}) == DEFAULTS[name]
    assert normalized_params(name, None) == DEFAULTS[name]
    strategy = build_strategy(name, {})
    assert isinstance(strategy, BUILTINS[name])
    assert strategy.params.model_dump() == DEFAULTS[name]


@pytest.mark.parametrize(("name", "params"), VALID)
def test_valid_params(name: str, params: dict) -> None:
    normalized = normalized_params(name, params)
    assert normalized == {**DEFAULTS[name], **params}
    assert set(normalized) == set(DEFAULTS[name])
    # normalizing is idempotent: what is stored validates to itself
    assert normalized_params(name, normalized) == normalized


@pytest.mark.parametrize(("name", "params", "field"), INVALID)
def test_invalid_params_name_the_field(name: str, params: dict, field: str) -> None:
    with pytest.raises(StrategyConfigError) as info:
        build_strategy(name, params)
    assert [e["field"] for e in info.value.errors] == [field]
    assert f"{field}:" in str(info.value)
    assert name in str(info.value)


@pytest.mark.parametrize(("name", "params", "field", "message"), ORDER_RULES)
def test_order_rules(name: str, params: dict, field: str, message: str) -> None:
    with pytest.raises(StrategyConfigError) as info:
        normalized_params(name, params)
    assert info.value.errors == [{"field": field, "message": message}]
    assert message in str(info.value)


def test_order_rule_is_skipped_when_the_other_field_is_invalid() -> None:
    with pytest.raises(StrategyConfigError) as info:
        normalized_params("sma_crossover", {"fast": "x", "slow": 5})
    assert [e["field"] for e in info.value.errors] == ["fast"]


def test_several_errors_are_all_reported() -> None:
    with pytest.raises(StrategyConfigError) as info:
        normalized_params("donchian_breakout", {"entry_window": 0, "exit_window": "a", "x": 1})
    assert sorted(e["field"] for e in info.value.errors) == ["entry_window", "exit_window", "x"]


@pytest.mark.parametrize("params", [[1, 2], "fast=1", 3])
def test_params_must_be_an_object(params) -> None:
    with pytest.raises(StrategyConfigError, match="must be an object"):
        build_strategy("sma_crossover", params)


def test_params_are_frozen() -> None:
    strategy = build_strategy("sma_crossover", {"fast": 5, "slow": 8})
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance ValidationError
        strategy.params.fast = 6
    assert strategy.params.fast == 5


def test_strategy_accepts_a_params_instance_or_a_dict() -> None:
    params = SmaCrossover.Params(fast=3, slow=9)
    assert SmaCrossover(params).params is params
    assert SmaCrossover({"fast": 3, "slow": 9}).params == params
    with pytest.raises(StrategyConfigError):
        SmaCrossover({"fast": 9, "slow": 3})


@pytest.mark.parametrize(
    ("name", "params", "expected"),
    [
        (
            "sma_crossover",
            {"fast": 5, "slow": 8},
            {"fast": ("sma", "close", 5), "slow": ("sma", "close", 8)},
        ),
        ("rsi_mean_reversion", {"window": 7}, {"rsi": ("rsi", "close", 7)}),
        (
            "donchian_breakout",
            {"entry_window": 30, "exit_window": 12},
            {"upper": ("highest", "high", 30), "lower": ("lowest", "low", 12)},
        ),
        ("buy_and_hold", {}, {}),
    ],
)
def test_indicators_follow_params(name: str, params: dict, expected: dict) -> None:
    specs = build_strategy(name, params).indicators()
    assert {k: (s.fn, s.kwargs["source"], s.kwargs["window"]) for k, s in specs.items()} == expected


# --- loading by dotted path -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["tests.custom_strategy_example:MyStrat", "tests.custom_strategy_example.MyStrat"]
)
def test_custom_strategy_by_dotted_path(path: str) -> None:
    from tests.custom_strategy_example import MyStrat

    assert get_strategy_class(path) is MyStrat
    strategy = build_strategy(path, {"margin": 0.5})
    assert isinstance(strategy, MyStrat)
    assert normalized_params(path, {}) == {"margin": 0.0}
    assert "my_custom_strat" not in registered_strategies()  # loading does not register it


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("tests.custom_strategy_example:NotAStrategy", "is not a Strategy subclass"),
        ("tests.custom_strategy_example.NotAStrategy", "is not a Strategy subclass"),
        ("tests.custom_strategy_example:NOT_A_CLASS", "is not a Strategy subclass"),
        ("tests.custom_strategy_example:Missing", "cannot load strategy"),
        ("tests.no_such_module:MyStrat", "cannot load strategy"),
        ("no_such_package.mod.Cls", "not in an allowed package"),
        # A bot config must not make the server import whatever it names.
        ("os:system", "not in an allowed package"),
        ("subprocess.Popen", "not in an allowed package"),
        ("testsuite.evil:Cls", "not in an allowed package"),  # a prefix of a name is not its package
    ],
)
def test_dotted_path_refusals(path: str, message: str) -> None:
    with pytest.raises(StrategyConfigError, match=message):
        get_strategy_class(path)


def test_custom_strategy_params_are_validated() -> None:
    with pytest.raises(StrategyConfigError) as info:
        build_strategy("tests.custom_strategy_example:MyStrat", {"margin": -1})
    assert [e["field"] for e in info.value.errors] == ["margin"]


@pytest.mark.parametrize("name", ["nope", "SMA_CROSSOVER", ""])
def test_unknown_name_lists_known_names(name: str) -> None:
    with pytest.raises(StrategyConfigError) as info:
        get_strategy_class(name)
    text = str(info.value)
    assert f"unknown strategy {name!r}" in text
    for known in BUILTINS:
        assert known in text


# --- behaviour on scripted bars ---------------------------------------------------------------------


class _Engine:
    """Records the targets a strategy sets (the only thing built-ins do)."""

    def __init__(self) -> None:
        self.targets: list[tuple[int, float]] = []
        self.ctx: StrategyContext | None = None

    def on_target(self, exposure: float) -> None:
        self.targets.append((self.ctx.i, exposure))


def run(strategy: Strategy, close: list[float], high=None, low=None) -> list[tuple[int, float]]:
    """Run `strategy` bar by bar the way the engine does; returns [(bar, new target)]."""
    c = np.asarray(close, dtype=np.float64)
    cols = {
        "ts": np.arange(len(c), dtype=np.int64) * 86_400,
        "open": c,
        "high": c if high is None else np.asarray(high, dtype=np.float64),
        "low": c if low is None else np.asarray(low, dtype=np.float64),
        "close": c,
        "volume": np.ones_like(c),
    }
    ind = {
        name: compute_indicator(spec, cols).tolist() for name, spec in strategy.indicators().items()
    }
    engine = _Engine()
    ctx = StrategyContext(engine, {k: v.tolist() for k, v in cols.items()}, ind, "TEST-USD", "1d")
    engine.ctx = ctx
    for i in range(len(c)):
        ctx.i = i
        strategy.on_bar(ctx)
    return engine.targets


def test_sma_crossover_goes_long_and_flat() -> None:
    close = [10, 10, 10, 11, 12, 13, 12, 10, 9, 9, 9]
    targets = run(SmaCrossover({"fast": 2, "slow": 3, "exposure": 0.5}), close)
    # bar 2: first bar with both SMAs (equal): flat; bar 3: fast > slow; bar 7: fast < slow
    assert targets == [(2, 0.0), (3, 0.5), (7, 0.0)]


def test_rsi_mean_reversion_buys_oversold_and_exits_overbought() -> None:
    close = [10, 9, 8, 7, 7.5, 8, 9, 10, 11, 10.5, 10]
    targets = run(RsiMeanReversion({"window": 3, "oversold": 30, "overbought": 70}), close)
    # RSI: NaN until bar 3 (0 there: long); bar 5 RSI 50 keeps it; bar 6 RSI 100: flat
    assert targets == [(3, 1.0), (6, 0.0)]


def test_donchian_breakout_uses_the_previous_bars_channel() -> None:
    close = [10, 11, 10, 12, 11.5, 12, 11.8, 9, 9.5]
    targets = run(DonchianBreakout({"entry_window": 2, "exit_window": 2}), close)
    # bar 3: 12 > max(11, 10) of bars 1-2; bar 5: 12 is not above max(12, 11.5);
    # bar 7: 9 < min(12, 11.8) of bars 5-6
    assert targets == [(3, 1.0), (7, 0.0)]


def test_buy_and_hold_buys_once() -> None:
    assert run(BuyAndHold({"exposure": 0.75}), [10, 11, 9, 12]) == [(0, 0.75)]


@pytest.mark.parametrize("name", BUILTINS)
def test_decisions_on_a_prefix_are_a_prefix_of_the_decisions(name: str) -> None:
    # Live sessions recompute indicators on a growing history: earlier decisions must not change.
    rng = np.random.default_rng(5)
    close = (100 * np.exp(np.cumsum(rng.normal(0, 0.02, 300)))).tolist()
    params = {
        "sma_crossover": {"fast": 3, "slow": 8},
        "rsi_mean_reversion": {"window": 5},
        "donchian_breakout": {"entry_window": 6, "exit_window": 3},
        "buy_and_hold": {},
    }[name]
    full = run(build_strategy(name, params), close)
    assert len(full) >= (1 if name == "buy_and_hold" else 4)
    for k in [*range(1, len(close), 7), len(close)]:
        assert run(build_strategy(name, params), close[:k]) == [d for d in full if d[0] < k]


def test_allowed_strategy_packages_follow_the_setting(settings) -> None:
    settings.PAPER_STRATEGY_PACKAGES = ["strategies"]
    with pytest.raises(StrategyConfigError, match=r"not in an allowed package \(strategies; PAPER_STRATEGY_PACKAGES\)"):
        get_strategy_class("tests.custom_strategy_example:MyStrat")
    assert get_strategy_class("sma_crossover").name == "sma_crossover"  # built-ins always
