"""The seeded GBM generator: determinism, OHLC invariants, spacing and labelling.

It must depend only on its arguments, never on numpy's global RNG.
"""
from __future__ import annotations

import numpy as np
import pytest

from paper.engine.bars import TIMEFRAME_SECONDS
from paper.engine.synthetic import synthetic_bars

COLUMNS = ("ts", "open", "high", "low", "close", "volume")


def _bytes(bars) -> list[bytes]:
    return [getattr(bars, name).tobytes() for name in COLUMNS]


def test_same_seed_is_byte_identical():
    a = synthetic_bars("ETH-USD", "1h", 5000, seed=42)
    b = synthetic_bars("ETH-USD", "1h", 5000, seed=42)
    assert _bytes(a) == _bytes(b)
    assert a.meta == b.meta


def test_different_seed_differs():
    a = synthetic_bars("ETH-USD", "1h", 1000, seed=1)
    b = synthetic_bars("ETH-USD", "1h", 1000, seed=2)
    assert a.ts.tobytes() == b.ts.tobytes()
    for name in ("close", "high", "low", "volume"):
        assert not np.array_equal(getattr(a, name), getattr(b, name))


def test_independent_of_global_rng():
    np.random.seed(1)
    state_before = np.random.get_state()[1].copy()
    a = synthetic_bars("BTC-USD", "5m", 2000, seed=7)
    # The generator must not consume from the global stream...
    assert np.array_equal(np.random.get_state()[1], state_before)
    # ...nor be affected by it.
    np.random.random(1000)
    np.random.seed(99)
    b = synthetic_bars("BTC-USD", "5m", 2000, seed=7)
    assert _bytes(a) == _bytes(b)


@pytest.mark.parametrize("timeframe", ["1m", "5m", "1h", "1d"])
def test_ohlc_invariants_and_spacing(timeframe):
    n = 20_000
    bars = synthetic_bars("ETH-USD", timeframe, n, seed=3, start_ts=1_700_000_000, annual_vol=1.5)
    assert len(bars) == n
    assert bars.ts.dtype == np.int64
    assert bars.close.dtype == np.float64
    assert bars.ts[0] == 1_700_000_000
    assert np.all(np.diff(bars.ts) == TIMEFRAME_SECONDS[timeframe])
    body_lo = np.minimum(bars.open, bars.close)
    body_hi = np.maximum(bars.open, bars.close)
    assert np.all(bars.low > 0)
    assert np.all(bars.low <= body_lo)
    assert np.all(body_hi <= bars.high)
    # Wicks are real, not degenerate.
    assert np.mean(bars.high > body_hi) > 0.99
    assert np.mean(bars.low < body_lo) > 0.99
    assert np.all(bars.volume > 0)
    assert np.all(np.isfinite(np.vstack([bars.open, bars.high, bars.low, bars.close, bars.volume])))
    assert bars.open[0] == 2000.0
    assert np.array_equal(bars.open[1:], bars.close[:-1])
    bars.check()


def test_volatility_scales_with_bar_length():
    # GBM log-returns have stdev annual_vol * sqrt(bar / year).
    bars = synthetic_bars("ETH-USD", "1h", 50_000, seed=11, annual_vol=0.8)
    log_ret = np.diff(np.log(bars.close))
    expected = 0.8 * np.sqrt(3600 / (365 * 86400))
    assert log_ret.std() == pytest.approx(expected, rel=0.02)
    assert bars.volume.mean() == pytest.approx(1000.0, rel=0.02)


def test_labelled_synthetic():
    bars = synthetic_bars("ETH-USD", "1d", 10, seed=5, start_price=1500.0)
    assert bars.source == "synthetic"
    assert bars.synthetic
    assert "synthetic" in bars.label
    assert bars.meta["generator"] == "gbm"
    assert bars.meta["seed"] == 5
    assert bars.meta["start_price"] == 1500.0
    assert bars.meta["annual_vol"] == 0.8


def test_zero_bars_and_bad_args():
    assert len(synthetic_bars("ETH-USD", "1d", 0, seed=1)) == 0
    with pytest.raises(ValueError):
        synthetic_bars("ETH-USD", "1d", -1, seed=1)
    with pytest.raises(ValueError):
        synthetic_bars("ETH-USD", "1d", 10, seed=1, start_price=0.0)
    with pytest.raises(ValueError, match="unknown timeframe"):
        synthetic_bars("ETH-USD", "3d", 10, seed=1)
