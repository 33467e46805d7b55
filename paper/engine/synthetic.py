"""The seeded synthetic bar generator (geometric Brownian motion), for tests and demos.

Output is labelled source="synthetic" and depends only on the arguments, never on global RNG state.
"""
from __future__ import annotations

import math

import numpy as np

from .bars import SECONDS_PER_YEAR, Bars, timeframe_seconds

# Wick length as a fraction of one bar's volatility: big enough to be visible on a chart,
# small enough that wicks do not dwarf bodies.
WICK_SCALE = 0.5
# Log-normal spread of volume around base_volume.
VOLUME_SIGMA = 0.4


def synthetic_bars(
    symbol: str,
    timeframe: str,
    n: int,
    *,
    seed: int,
    start_ts: int = 1_704_067_200,
    start_price: float = 2000.0,
    annual_vol: float = 0.8,
    annual_drift: float = 0.0,
    base_volume: float = 1000.0,
) -> Bars:
    """`n` GBM bars starting at `start_ts` (2024-01-01 UTC by default); same args, same bytes."""
    step = timeframe_seconds(timeframe)
    if n < 0:
        raise ValueError(f"synthetic_bars: n must be >= 0, got {n}")
    if not (math.isfinite(start_price) and start_price > 0):
        raise ValueError(f"synthetic_bars: start_price must be > 0, got {start_price}")
    if not (math.isfinite(annual_vol) and annual_vol >= 0):
        raise ValueError(f"synthetic_bars: annual_vol must be >= 0, got {annual_vol}")
    if not math.isfinite(annual_drift):
        raise ValueError(f"synthetic_bars: annual_drift must be finite, got {annual_drift}")
    if not (math.isfinite(base_volume) and base_volume > 0):
        raise ValueError(f"synthetic_bars: base_volume must be > 0, got {base_volume}")

    # A private PCG64 stream: results never depend on (or disturb) np.random's global state.
    # Draw order is part of the output contract; changing it changes every seeded series.
    rng = np.random.Generator(np.random.PCG64(seed))
    shocks = rng.standard_normal(n)
    wick_up = rng.standard_exponential(n)
    wick_down = rng.standard_exponential(n)
    volume_noise = rng.standard_normal(n)

    # Scale annual parameters to one bar; crypto trades 365 days a year.
    dt = step / SECONDS_PER_YEAR
    bar_vol = annual_vol * math.sqrt(dt)
    log_returns = (annual_drift - 0.5 * annual_vol**2) * dt + bar_vol * shocks
    close = start_price * np.exp(np.cumsum(log_returns))

    open_ = np.empty(n, dtype=np.float64)
    if n:
        open_[0] = start_price
        open_[1:] = close[:-1]

    # Multiplying by exp(+x) / exp(-x) with x >= 0 keeps high >= body >= low > 0 exactly,
    # because float rounding is monotonic.
    body_top = np.maximum(open_, close)
    body_bottom = np.minimum(open_, close)
    high = body_top * np.exp(WICK_SCALE * bar_vol * wick_up)
    low = body_bottom * np.exp(-WICK_SCALE * bar_vol * wick_down)

    # Mean-preserving log-normal: E[volume] == base_volume.
    volume = base_volume * np.exp(VOLUME_SIGMA * volume_noise - 0.5 * VOLUME_SIGMA**2)

    ts = start_ts + np.arange(n, dtype=np.int64) * step
    return Bars.from_columns(
        symbol=symbol,
        timeframe=timeframe,
        ts=ts,
        open=open_,
        high=high,
        low=low,
        close=close,
        volume=volume,
        source="synthetic",
        meta={
            "generator": "gbm",
            "seed": seed,
            "n": n,
            "start_ts": start_ts,
            "start_price": start_price,
            "annual_vol": annual_vol,
            "annual_drift": annual_drift,
            "base_volume": base_volume,
        },
    )
