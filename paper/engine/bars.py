"""OHLCV bar arrays, the one data shape the engine reads.

Timestamps are int64 epoch seconds (UTC) of the bar's open; prices and volume are float64.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Bar length in seconds for every timeframe the platform knows.
TIMEFRAME_SECONDS: dict[str, int] = {
    "1m": 60,
    "5m": 300,
    "15m": 900,
    "1h": 3600,
    "4h": 14400,
    "1d": 86400,
}

# Crypto trades around the clock: a year is 365 days of bars (used to annualize metrics).
SECONDS_PER_YEAR = 365 * 86400


def timeframe_seconds(timeframe: str) -> int:
    try:
        return TIMEFRAME_SECONDS[timeframe]
    except KeyError:
        known = ", ".join(TIMEFRAME_SECONDS)
        raise ValueError(f"unknown timeframe {timeframe!r}; known: {known}") from None


def periods_per_year(timeframe: str) -> float:
    return SECONDS_PER_YEAR / timeframe_seconds(timeframe)


FIELDS = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class Bars:
    """A contiguous, strictly increasing series of bars for one symbol and timeframe.

    `source` says where the bars came from: "stored" (the bar store), "csv", or
    "synthetic" (the seeded generator). Synthetic data is labelled as such wherever shown.
    """

    symbol: str
    timeframe: str
    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    source: str = "stored"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        timeframe_seconds(self.timeframe)
        n = len(self.ts)
        for name in FIELDS:
            if len(getattr(self, name)) != n:
                raise ValueError(f"bars: column {name} has {len(getattr(self, name))} rows, ts has {n}")

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def synthetic(self) -> bool:
        return self.source == "synthetic"

    @property
    def label(self) -> str:
        """Human label, e.g. 'ETH-USD 1d (synthetic)'."""
        suffix = " (synthetic)" if self.synthetic else ""
        return f"{self.symbol} {self.timeframe}{suffix}"

    def slice(self, start: int, stop: int | None = None) -> Bars:
        sl = slice(start, stop)
        return Bars(
            symbol=self.symbol,
            timeframe=self.timeframe,
            ts=self.ts[sl],
            open=self.open[sl],
            high=self.high[sl],
            low=self.low[sl],
            close=self.close[sl],
            volume=self.volume[sl],
            source=self.source,
            meta=dict(self.meta),
        )

    def between(self, start_ts: int | None, end_ts: int | None) -> Bars:
        """Bars with start_ts <= ts <= end_ts (either bound optional)."""
        lo = 0 if start_ts is None else int(np.searchsorted(self.ts, start_ts, side="left"))
        hi = len(self) if end_ts is None else int(np.searchsorted(self.ts, end_ts, side="right"))
        return self.slice(lo, hi)

    @classmethod
    def from_columns(
        cls,
        *,
        symbol: str,
        timeframe: str,
        ts,
        open,
        high,
        low,
        close,
        volume,
        source: str = "stored",
        meta: dict | None = None,
    ) -> Bars:
        return cls(
            symbol=symbol,
            timeframe=timeframe,
            ts=np.asarray(ts, dtype=np.int64),
            open=np.asarray(open, dtype=np.float64),
            high=np.asarray(high, dtype=np.float64),
            low=np.asarray(low, dtype=np.float64),
            close=np.asarray(close, dtype=np.float64),
            volume=np.asarray(volume, dtype=np.float64),
            source=source,
            meta=meta or {},
        )

    def check(self) -> None:
        """Raise ValueError naming the first bar that breaks OHLC sanity or ordering."""
        if len(self) == 0:
            return
        if np.any(np.diff(self.ts) <= 0):
            i = int(np.argmax(np.diff(self.ts) <= 0)) + 1
            raise ValueError(f"bars out of order at index {i} (ts {int(self.ts[i])})")
        cols = np.vstack([self.open, self.high, self.low, self.close, self.volume])
        if not np.all(np.isfinite(cols)):
            i = int(np.argmax(~np.all(np.isfinite(cols), axis=0)))
            raise ValueError(f"non-finite value at index {i}")
        bad = (
            (self.high < self.low)
            | (self.open > self.high)
            | (self.open < self.low)
            | (self.close > self.high)
            | (self.close < self.low)
            | (self.low <= 0)
            | (self.volume < 0)
        )
        if np.any(bad):
            i = int(np.argmax(bad))
            raise ValueError(
                f"bad bar at index {i}: open={self.open[i]} high={self.high[i]} "
                f"low={self.low[i]} close={self.close[i]} volume={self.volume[i]}"
            )
