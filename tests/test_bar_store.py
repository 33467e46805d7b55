"""The bar store: sample data load, range reads into numpy, listings and uniqueness.

Counts are the vendored files' data rows (the files have no trailing newline, so `wc -l` shows one less).
"""
from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pytest
from django.db import IntegrityError, transaction

from paper.engine.csvbars import parse_bars_csv
from paper.models import Bar
from paper.selectors import NoBarsError, bars_available, bars_load
from paper.services import SAMPLE_DATA_DIR, sample_data_load

ETH_ROWS = 2392  # 2017-11-09 .. 2024-05-27, daily
BTC_ROWS = 3541  # 2014-09-17 .. 2024-05-27, daily

pytestmark = pytest.mark.django_db


def _epoch(y, m, d, hh=0) -> int:
    return int(datetime(y, m, d, hh, tzinfo=UTC).timestamp())


@pytest.fixture
def loaded():
    return sample_data_load()


def test_sample_data_load_counts(loaded):
    eth, btc = loaded
    assert (eth.symbol, eth.timeframe, eth.created, eth.total) == ("ETH-USD", "1d", ETH_ROWS, ETH_ROWS)
    assert (btc.symbol, btc.timeframe, btc.created, btc.total) == ("BTC-USD", "1d", BTC_ROWS, BTC_ROWS)
    assert eth.first_ts == datetime(2017, 11, 9, tzinfo=UTC)
    assert btc.first_ts == datetime(2014, 9, 17, tzinfo=UTC)
    assert eth.last_ts == btc.last_ts == datetime(2024, 5, 27, tzinfo=UTC)
    assert Bar.objects.filter(symbol="ETH-USD", timeframe="1d").count() == ETH_ROWS
    assert Bar.objects.filter(symbol="BTC-USD", timeframe="1d").count() == BTC_ROWS
    assert str(SAMPLE_DATA_DIR).endswith("paper/sample_data")


def test_sample_data_reload_is_unchanged(loaded):
    again = sample_data_load()
    assert [(r.created, r.updated, r.unchanged) for r in again] == [(0, 0, ETH_ROWS), (0, 0, BTC_ROWS)]
    assert Bar.objects.count() == ETH_ROWS + BTC_ROWS


def test_bars_load_round_trips_the_file_exactly(loaded):
    bars = bars_load(symbol="ETH-USD", timeframe="1d")
    parsed = parse_bars_csv(SAMPLE_DATA_DIR / "ETH-USD-1d.csv", symbol="ETH-USD", timeframe="1d")
    assert bars.source == "stored"
    assert bars.ts.dtype == np.int64 and bars.close.dtype == np.float64
    for name in ("ts", "open", "high", "low", "close", "volume"):
        assert np.array_equal(getattr(bars, name), getattr(parsed, name)), name
    bars.check()


def test_bars_load_date_range_end_day_inclusive(loaded):
    bars = bars_load(symbol="ETH-USD", timeframe="1d", start=date(2020, 1, 1), end=date(2020, 1, 31))
    assert len(bars) == 31
    assert bars.ts[0] == _epoch(2020, 1, 1)
    assert bars.ts[-1] == _epoch(2020, 1, 31)


def test_bars_load_datetime_bounds(loaded):
    # Datetime bounds are exact instants; naive means UTC.
    bars = bars_load(
        symbol="BTC-USD",
        timeframe="1d",
        start=datetime(2020, 1, 1, 12),
        end=datetime(2020, 1, 31, 0, 0, tzinfo=UTC),
    )
    assert bars.ts[0] == _epoch(2020, 1, 2)
    assert bars.ts[-1] == _epoch(2020, 1, 31)
    assert len(bars) == 30


def test_bars_load_open_ended(loaded):
    bars = bars_load(symbol="BTC-USD", timeframe="1d", start=date(2024, 5, 20))
    assert len(bars) == 8
    assert bars.ts[-1] == _epoch(2024, 5, 27)
    head = bars_load(symbol="BTC-USD", timeframe="1d", end=date(2014, 9, 18))
    assert head.ts.tolist() == [_epoch(2014, 9, 17), _epoch(2014, 9, 18)]


def test_no_bars_error_names_symbol_timeframe_range(loaded):
    with pytest.raises(NoBarsError, match=r"SOL-USD 1d in any time"):
        bars_load(symbol="SOL-USD", timeframe="1d")
    with pytest.raises(NoBarsError, match=r"ETH-USD 1h"):
        bars_load(symbol="ETH-USD", timeframe="1h")
    with pytest.raises(NoBarsError, match=r"ETH-USD 1d in 2010-01-01 \.\. 2010-12-31"):
        bars_load(symbol="ETH-USD", timeframe="1d", start=date(2010, 1, 1), end=date(2010, 12, 31))
    assert issubclass(NoBarsError, LookupError)


def test_stored_synthetic_rows_stay_labelled():
    Bar.objects.create(
        symbol="SYN", timeframe="1d", ts=datetime(2024, 1, 1, tzinfo=UTC),
        open=1, high=1, low=1, close=1, volume=1, source="synthetic",
    )
    bars = bars_load(symbol="SYN", timeframe="1d")
    assert bars.source == "synthetic"
    assert "synthetic" in bars.label


def test_bars_available(loaded):
    listing = bars_available()
    assert listing == [
        {
            "symbol": "BTC-USD", "timeframe": "1d", "count": BTC_ROWS,
            "first": datetime(2014, 9, 17, tzinfo=UTC), "last": datetime(2024, 5, 27, tzinfo=UTC),
            "source": "csv",
        },
        {
            "symbol": "ETH-USD", "timeframe": "1d", "count": ETH_ROWS,
            "first": datetime(2017, 11, 9, tzinfo=UTC), "last": datetime(2024, 5, 27, tzinfo=UTC),
            "source": "csv",
        },
    ]


def test_unique_symbol_timeframe_ts():
    ts = datetime(2024, 1, 1, tzinfo=UTC)
    fields = dict(open=1, high=2, low=1, close=1, volume=0)
    Bar.objects.create(symbol="X", timeframe="1d", ts=ts, **fields)
    Bar.objects.create(symbol="X", timeframe="1h", ts=ts, **fields)
    Bar.objects.create(symbol="Y", timeframe="1d", ts=ts, **fields)
    with pytest.raises(IntegrityError), transaction.atomic():
        Bar.objects.create(symbol="X", timeframe="1d", ts=ts, **fields)
    assert Bar.objects.count() == 3
