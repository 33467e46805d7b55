"""The run charts (paper/artifacts.py): PNGs whose garbage never reaches the old generations.

A figure is thousands of objects in reference cycles. Left to Python's collector they piled up
in the oldest generation and a worker's full collections stopped every session thread for
150-280 ms; `_plot` collects each chart's garbage while it is young.
"""
import gc

import numpy as np
import pytest

from paper.artifacts import _plot

TS = np.arange(600, dtype=np.int64) * 60 + 1_700_000_000
EQUITY = 100_000 + np.cumsum(np.random.default_rng(7).normal(size=600))


@pytest.fixture
def quiet_gc():
    gc.collect()
    yield
    gc.enable()


def test_a_chart_is_a_png_and_leaves_no_cyclic_garbage_behind(quiet_gc):
    _plot(TS, EQUITY, title="warm-up", ylabel="equity")  # first use imports matplotlib's modules
    gc.collect()
    png = _plot(TS, EQUITY, title="ETH-USD 1m (synthetic) equity", ylabel="equity")
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5_000
    assert gc.isenabled()
    # The figure's ~2,700 objects were freed by _plot itself: a full collection finds almost nothing.
    assert gc.collect() < 100


@pytest.mark.parametrize("points", [0, 1, 3])
def test_tiny_and_empty_series_still_chart(quiet_gc, points):
    assert _plot(TS[:points], EQUITY[:points], title="t", ylabel="y").startswith(b"\x89PNG")


def test_a_caller_that_paused_the_collector_keeps_it_paused(quiet_gc):
    gc.disable()
    _plot(TS, EQUITY, title="t", ylabel="y")
    assert not gc.isenabled()
