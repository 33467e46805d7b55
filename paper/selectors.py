"""Reads from the bar store: numpy `Bars` for the engine and summaries for listings.

Nothing here writes; imports live in `paper.services`.
"""
from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import numpy as np
from django.db.models import Count, Max, Min

from paper.engine.bars import Bars, timeframe_seconds
from paper.models import Bar


class NoBarsError(LookupError):
    """No stored bars match the requested symbol, timeframe and range."""


def _as_utc(value: datetime) -> datetime:
    # Naive datetimes mean UTC everywhere in the platform, as in the CSV importer.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _describe_range(start: date | datetime | None, end: date | datetime | None) -> str:
    if start is None and end is None:
        return "any time"
    lo = "start" if start is None else start.isoformat()
    hi = "end" if end is None else end.isoformat()
    return f"{lo} .. {hi}"


def bars_load(
    *,
    symbol: str,
    timeframe: str,
    start: date | datetime | None = None,
    end: date | datetime | None = None,
) -> Bars:
    """Stored bars with start <= ts <= end; a date `end` includes that whole day (UTC).

    Raises NoBarsError when nothing matches.
    """
    timeframe_seconds(timeframe)
    qs = Bar.objects.filter(symbol=symbol, timeframe=timeframe)
    # datetime is a subclass of date, so test for it first.
    if isinstance(start, datetime):
        qs = qs.filter(ts__gte=_as_utc(start))
    elif isinstance(start, date):
        qs = qs.filter(ts__gte=datetime.combine(start, time.min, tzinfo=UTC))
    if isinstance(end, datetime):
        qs = qs.filter(ts__lte=_as_utc(end))
    elif isinstance(end, date):
        qs = qs.filter(ts__lt=datetime.combine(end + timedelta(days=1), time.min, tzinfo=UTC))

    rows = list(qs.order_by("ts").values_list("ts", "open", "high", "low", "close", "volume", "source"))
    if not rows:
        raise NoBarsError(
            f"no stored bars for {symbol} {timeframe} in {_describe_range(start, end)}"
            " (import a file with `manage.py import_bars`)"
        )
    ts, open_, high, low, close, volume, sources = zip(*rows, strict=True)
    row_sources = sorted(set(sources))
    return Bars.from_columns(
        symbol=symbol,
        timeframe=timeframe,
        ts=np.fromiter((int(t.timestamp()) for t in ts), dtype=np.int64, count=len(ts)),
        open=open_,
        high=high,
        low=low,
        close=close,
        volume=volume,
        # Stored synthetic rows must stay labelled synthetic wherever the bars are shown.
        source="synthetic" if "synthetic" in row_sources else "stored",
        meta={"row_sources": row_sources},
    )


def bars_available() -> list[dict]:
    """One entry per stored (symbol, timeframe): count, first/last ts, and row source."""
    rows = (
        Bar.objects.values("symbol", "timeframe")
        .annotate(
            count=Count("pk"),
            first=Min("ts"),
            last=Max("ts"),
            source_min=Min("source"),
            source_max=Max("source"),
        )
        .order_by("symbol", "timeframe")
    )
    return [
        {
            "symbol": r["symbol"],
            "timeframe": r["timeframe"],
            "count": r["count"],
            "first": r["first"],
            "last": r["last"],
            "source": r["source_min"] if r["source_min"] == r["source_max"] else "mixed",
        }
        for r in rows
    ]
