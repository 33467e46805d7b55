"""Indicators: bit-exact prefix stability, agreement with pandas, warm-up, errors, check_causal."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paper.engine import indicators as ind
from paper.engine.indicators import (
    INDICATORS,
    check_causal,
    compute_indicator,
    default_cut_points,
    indicator,
    is_builtin,
)
from paper.engine.strategy import IndicatorSpec

BUILTINS = ["sma", "rsi", "highest", "lowest", "roc", "stdev"]
WINDOWS = [1, 2, 3, 5, 14, 20, 50, 200]
SOURCES = {
    "sma": "close",
    "rsi": "close",
    "highest": "high",
    "lowest": "low",
    "roc": "close",
    "stdev": "close",
}
# Leading NaNs: windows over bars need window-1 bars of history, windows over changes need window.
WARMUP = {"sma": -1, "highest": -1, "lowest": -1, "stdev": -1, "rsi": 0, "roc": 0}
N = 5_000


def make_cols(
    n: int = N, seed: int = 7, start: float = 100.0, vol: float = 0.02
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = start * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    open_ = np.concatenate([[start], close[:-1]])
    spread = np.abs(rng.normal(0.0, vol / 2, n)) * close
    return {
        "ts": np.arange(n, dtype=np.int64) * 60,
        "open": open_,
        "high": np.maximum(open_, close) + spread,
        "low": np.minimum(open_, close) - spread,
        "close": close,
        "volume": rng.uniform(1.0, 1_000.0, n),
    }


COLS = make_cols()
CASES = [(fn, w) for fn in BUILTINS for w in WINDOWS]


def spec(fn: str, window: int, source: str | None = None) -> IndicatorSpec:
    return IndicatorSpec(fn, {"source": source or SOURCES[fn], "window": window})


def prefix(cols: dict[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
    return {c: v[:k] for c, v in cols.items()}


def cut_points(n: int) -> list[int]:
    rng = np.random.default_rng(n)
    points = set(range(0, 64)) | {n // 2, n - 1, n} | set(rng.integers(1, n, 60).tolist())
    for w in WINDOWS:
        points |= {w - 1, w, w + 1}
    return sorted(k for k in points if 0 <= k <= n)


# --- prefix stability ------------------------------------------------------------------------


@pytest.mark.parametrize(("fn", "window"), CASES)
def test_prefix_stable_bit_for_bit(fn: str, window: int) -> None:
    full = compute_indicator(spec(fn, window), COLS)
    for k in cut_points(N):
        part = compute_indicator(spec(fn, window), prefix(COLS, k))
        assert part.dtype == np.float64
        assert np.array_equal(part, full[:k], equal_nan=True), f"{fn}({window}) differs at cut {k}"


@pytest.mark.parametrize("fn", BUILTINS)
def test_prefix_stable_on_long_trending_high_priced_series(fn: str) -> None:
    cols = make_cols(n=50_000, seed=3, start=60_000.0, vol=0.01)
    full = compute_indicator(spec(fn, 20), cols)
    for k in (1, 19, 20, 21, 777, 4_096, 25_001, 49_999):
        assert np.array_equal(
            compute_indicator(spec(fn, 20), prefix(cols, k)), full[:k], equal_nan=True
        )


prices = st.lists(
    st.floats(min_value=1e-3, max_value=1e6, allow_nan=False, allow_infinity=False),
    min_size=0,
    max_size=120,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=prices, window=st.integers(1, 40), fn=st.sampled_from(BUILTINS))
def test_prefix_stable_property(values: list[float], window: int, fn: str) -> None:
    x = np.array(values, dtype=np.float64)
    cols = {name: x for name in ("open", "high", "low", "close", "volume")}
    full = compute_indicator(spec(fn, window), cols)
    assert full.shape == x.shape
    for k in range(len(x) + 1):
        assert np.array_equal(
            compute_indicator(spec(fn, window), prefix(cols, k)), full[:k], equal_nan=True
        )


# --- correctness against pandas -----------------------------------------------------------------


def pandas_reference(fn: str, x: np.ndarray, w: int) -> np.ndarray:
    s = pd.Series(x)
    if fn == "sma":
        return s.rolling(w).mean().to_numpy()
    if fn == "highest":
        return s.rolling(w).max().to_numpy()
    if fn == "lowest":
        return s.rolling(w).min().to_numpy()
    if fn == "stdev":
        return s.rolling(w).std(ddof=0).to_numpy()
    if fn == "roc":
        return (100.0 * (s / s.shift(w) - 1.0)).to_numpy()
    if fn == "rsi":
        delta = s.diff()
        gain = delta.clip(lower=0).rolling(w).mean()
        loss = (-delta).clip(lower=0).rolling(w).mean()
        total = gain + loss
        return (100.0 * gain / total).where(total != 0, 50.0).where(total.notna()).to_numpy()
    raise AssertionError(fn)


def exact_mean_std(x: np.ndarray, w: int, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population std of the windows ending at `at`, from correctly rounded sums."""
    means, stds = [], []
    for i in at:
        win = x[i - w + 1 : i + 1]
        m = math.fsum(win) / w
        m += math.fsum(win - m) / w  # refine
        means.append(m)
        stds.append(math.sqrt(math.fsum((win - m) ** 2) / w))
    return np.array(means), np.array(stds)


@pytest.mark.parametrize(("fn", "window"), CASES)
def test_matches_pandas(fn: str, window: int) -> None:
    x = COLS[SOURCES[fn]]
    got = compute_indicator(spec(fn, window), COLS)
    want = pandas_reference(fn, x, window)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    # pandas' rolling std (an online add/remove update) is itself off by up to ~3e-9 when a
    # window's spread is tiny next to the price; ours is checked against exact sums below.
    atol = 1e-8 if fn == "stdev" else 1e-9
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=atol, equal_nan=True)


@pytest.mark.parametrize(
    ("n", "start", "vol"), [(N, 100.0, 0.02), (200_000, 30_000.0, 0.005), (20_000, 1e-4, 0.05)]
)
@pytest.mark.parametrize("window", [1, 2, 3, 20, 200])
def test_mean_and_std_match_exact_sums(n: int, start: float, vol: float, window: int) -> None:
    # Long histories drifting far from the first price: the error must not grow with history.
    cols = make_cols(n=n, seed=11, start=start, vol=vol)
    x = cols["close"]
    rng = np.random.default_rng(window)
    at = np.unique(np.concatenate([rng.integers(window - 1, n, 300), np.arange(n - 50, n)]))
    mean, std = exact_mean_std(x, window, at)
    got_mean = compute_indicator(ind.sma("close", window), cols)[at]
    got_std = compute_indicator(ind.stdev("close", window), cols)[at]
    np.testing.assert_allclose(got_mean, mean, rtol=1e-15, atol=0)
    # std: relative to the window's own spread, and to the price scale for near-flat windows.
    np.testing.assert_allclose(got_std, std, rtol=1e-11, atol=1e-12 * start)


@pytest.mark.parametrize(("fn", "window"), CASES)
def test_warmup_nans(fn: str, window: int) -> None:
    got = compute_indicator(spec(fn, window), COLS)
    warmup = window + WARMUP[fn]
    assert np.isnan(got[:warmup]).all()
    assert not np.isnan(got[warmup:]).any()


@pytest.mark.parametrize("fn", BUILTINS)
@pytest.mark.parametrize("n", [0, 1, 4, 5])
def test_shorter_than_window_is_all_nan(fn: str, n: int) -> None:
    got = compute_indicator(spec(fn, 6), prefix(COLS, n))
    assert got.shape == (n,)
    assert np.isnan(got).all()


def test_exact_values_on_simple_series() -> None:
    flat = np.full(50, 123.456)
    cols = {c: flat for c in ("open", "high", "low", "close", "volume")}
    assert np.array_equal(compute_indicator(ind.sma("close", 10), cols)[9:], flat[9:])
    assert np.array_equal(compute_indicator(ind.stdev("close", 10), cols)[9:], np.zeros(41))
    assert np.array_equal(compute_indicator(ind.rsi("close", 10), cols)[10:], np.full(40, 50.0))
    assert np.array_equal(compute_indicator(ind.roc("close", 10), cols)[10:], np.zeros(40))

    up = np.arange(1.0, 51.0)
    cols = {c: up for c in ("open", "high", "low", "close", "volume")}
    assert np.array_equal(compute_indicator(ind.rsi("close", 5), cols)[5:], np.full(45, 100.0))
    assert np.array_equal(compute_indicator(ind.highest("close", 5), cols)[4:], up[4:])
    assert np.array_equal(compute_indicator(ind.lowest("close", 5), cols)[4:], up[:-4])
    down = up[::-1].copy()
    cols = {c: down for c in ("open", "high", "low", "close", "volume")}
    assert np.array_equal(compute_indicator(ind.rsi("close", 5), cols)[5:], np.zeros(45))


@pytest.mark.parametrize("window", [1, 3, 7, 20])
def test_highest_lowest_are_exact_window_extremes(window: int) -> None:
    x = COLS["close"][:500]
    hi = compute_indicator(ind.highest("close", window), COLS)[:500]
    lo = compute_indicator(ind.lowest("close", window), COLS)[:500]
    for i in range(window - 1, 500):
        assert hi[i] == x[i - window + 1 : i + 1].max()
        assert lo[i] == x[i - window + 1 : i + 1].min()


def test_spec_helpers() -> None:
    assert ind.sma("close", 20) == IndicatorSpec("sma", {"source": "close", "window": 20})
    assert ind.rsi("close", 14) == IndicatorSpec("rsi", {"source": "close", "window": 14})
    assert ind.highest("high", 20) == IndicatorSpec("highest", {"source": "high", "window": 20})
    assert ind.lowest("low", 10) == IndicatorSpec("lowest", {"source": "low", "window": 10})
    assert ind.roc("close", 5) == IndicatorSpec("roc", {"source": "close", "window": 5})
    assert ind.stdev("volume", 30) == IndicatorSpec("stdev", {"source": "volume", "window": 30})
    for fn in BUILTINS:
        assert fn in INDICATORS and is_builtin(fn)


def test_does_not_modify_inputs() -> None:
    cols = {c: v.copy() for c, v in COLS.items()}
    for fn, window in CASES:
        compute_indicator(spec(fn, window), cols)
    for c in COLS:
        assert np.array_equal(cols[c], COLS[c])


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("the_spec", "pattern"),
    [
        (
            IndicatorSpec("nope", {"source": "close", "window": 3}),
            r"unknown indicator 'nope'; known: .*sma",
        ),
        (IndicatorSpec("sma", {"source": "close"}), r"indicator 'sma': bad arguments"),
        (
            IndicatorSpec("sma", {"source": "close", "window": 3, "extra": 1}),
            r"indicator 'sma': bad arguments",
        ),
        (
            IndicatorSpec("rsi", {"source": "close", "window": 0}),
            r"indicator 'rsi': window must be >= 1",
        ),
        (
            IndicatorSpec("rsi", {"source": "close", "window": -2}),
            r"indicator 'rsi': window must be >= 1",
        ),
        (
            IndicatorSpec("roc", {"source": "close", "window": "5"}),
            r"indicator 'roc': window must be an integer",
        ),
        (
            IndicatorSpec("roc", {"source": "close", "window": 2.0}),
            r"indicator 'roc': window must be an integer",
        ),
        (
            IndicatorSpec("stdev", {"source": "close", "window": True}),
            r"indicator 'stdev': window must be an integer",
        ),
        (
            IndicatorSpec("highest", {"source": "ts", "window": 3}),
            r"indicator 'highest': source must be one of",
        ),
        (
            IndicatorSpec("lowest", {"source": "adj_close", "window": 3}),
            r"indicator 'lowest': source must be one of",
        ),
    ],
)
def test_compute_indicator_errors_name_the_indicator(the_spec: IndicatorSpec, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        compute_indicator(the_spec, COLS)


def test_missing_column() -> None:
    cols = {"close": COLS["close"]}
    with pytest.raises(ValueError, match=r"indicator 'highest': column 'high' is missing"):
        compute_indicator(ind.highest("high", 3), cols)


def test_numpy_integer_window_is_accepted() -> None:
    got = compute_indicator(IndicatorSpec("sma", {"source": "close", "window": np.int64(5)}), COLS)
    assert np.array_equal(got, compute_indicator(ind.sma("close", 5), COLS), equal_nan=True)


# --- custom indicators and check_causal -----------------------------------------------------------


@indicator("ti_demeaned")
def _demeaned(cols, source: str = "close"):
    x = cols[source]
    return x - x.mean()  # uses the whole array: not causal


@indicator("ti_centered_mean")
def _centered_mean(cols, window: int = 5):
    return pd.Series(cols["close"]).rolling(window, center=True).mean().to_numpy()


@indicator("ti_double_close")
def _double_close(cols):
    return cols["close"] * 2.0


@indicator("ti_wrong_length")
def _wrong_length(cols):
    return cols["close"][:-1]


@indicator("ti_writes_input")
def _writes_input(cols):
    cols["close"][0] = -1.0
    return cols["close"]


@indicator("ti_raises")
def _raises(cols):
    raise RuntimeError("boom")


def test_custom_indicators_are_not_builtin() -> None:
    for name in ("ti_demeaned", "ti_centered_mean", "ti_double_close"):
        assert name in INDICATORS
        assert not is_builtin(name)


@pytest.mark.parametrize(("fn", "window"), CASES)
def test_check_causal_accepts_builtins(fn: str, window: int) -> None:
    check_causal(fn, {"source": SOURCES[fn], "window": window}, COLS, cut_points(N))
    check_causal(fn, {"source": SOURCES[fn], "window": window}, COLS, None)


def test_check_causal_accepts_a_causal_custom_indicator() -> None:
    check_causal("ti_double_close", {}, COLS, [1, 10, 2_500, N - 1])


@pytest.mark.parametrize(
    ("fn", "kwargs"), [("ti_demeaned", {}), ("ti_centered_mean", {"window": 5})]
)
def test_check_causal_rejects_lookahead(fn: str, kwargs: dict) -> None:
    message = (
        re.escape(f"indicator {fn} is not causal: value at bar ")
        + r"\d+"
        + re.escape(" changed when bars after 1000 were removed")
    )
    with pytest.raises(ValueError, match=message):
        check_causal(fn, kwargs, COLS, [1000, 2000])


def test_check_causal_names_the_first_changed_bar() -> None:
    # The centered 5-bar mean at bar j reads bars j-2..j+2: cut at 1000, bar 998 is the first
    # that loses a bar (1000) and turns NaN.
    with pytest.raises(ValueError, match=r"value at bar 998 changed when bars after 1000"):
        check_causal("ti_centered_mean", {"window": 5}, COLS, [1000])


def test_check_causal_ignores_out_of_range_cut_points() -> None:
    check_causal("ti_demeaned", {}, COLS, [0, N, N + 10, -5])


def test_wrong_length_and_failures_are_reported() -> None:
    with pytest.raises(ValueError, match=r"indicator 'ti_wrong_length' returned shape"):
        compute_indicator(IndicatorSpec("ti_wrong_length", {}), COLS)
    with pytest.raises(ValueError, match=r"indicator 'ti_raises': boom"):
        compute_indicator(IndicatorSpec("ti_raises", {}), COLS)


def test_custom_indicators_get_read_only_columns() -> None:
    cols = {c: v.copy() for c, v in COLS.items()}
    with pytest.raises(ValueError, match=r"indicator 'ti_writes_input': .*read-only"):
        compute_indicator(IndicatorSpec("ti_writes_input", {}), cols)
    assert cols["close"][0] == COLS["close"][0]


def test_a_taken_name_is_refused_unless_same_function() -> None:
    with pytest.raises(
        ValueError, match=r"'ti_double_close' is already registered by .*_double_close"
    ):

        @indicator("ti_double_close")
        def other(cols):  # pragma: no cover - never registered
            return cols["close"]

    assert INDICATORS["ti_double_close"] is _double_close
    assert indicator("ti_double_close")(_double_close) is _double_close  # same function: fine


def test_builtins_cannot_be_replaced() -> None:
    with pytest.raises(ValueError, match="built-in"):

        @indicator("sma")
        def fake_sma(cols, source, window):  # pragma: no cover - never registered
            return cols[source]

    assert INDICATORS["sma"] is ind._sma


def test_default_cut_points() -> None:
    assert default_cut_points(0) == []
    assert default_cut_points(1) == []
    points = default_cut_points(N)
    assert points == sorted(set(points))
    assert all(0 < k < N for k in points)
    assert N - 1 in points and 1 in points
