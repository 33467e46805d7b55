"""Writes to the bar store: importing CSV bar files and loading the vendored sample data.

A file is parsed and validated in full before anything is written, then written in one transaction.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from django.db import transaction

import paper
from paper.engine.bars import TIMEFRAME_SECONDS
from paper.engine.botconfig import SYMBOL_RE
from paper.engine.csvbars import BarFileError, parse_bars_csv
from paper.models import Bar

SAMPLE_DATA_DIR = Path(paper.__file__).parent / "sample_data"
# (symbol, timeframe, file name) for every vendored sample file.
SAMPLE_FILES = (
    ("ETH-USD", "1d", "ETH-USD-1d.csv"),
    ("BTC-USD", "1d", "BTC-USD-1d.csv"),
)
VALUE_FIELDS = ("open", "high", "low", "close", "volume", "source")
# Small enough for SQLite's bound-parameter limit on older builds, large enough to be fast.
BATCH_SIZE = 500
SYMBOL_MAX_LENGTH = Bar._meta.get_field("symbol").max_length


@dataclass(frozen=True)
class ImportResult:
    """What one import did; counts are bars, `first_ts`/`last_ts` the file's range (UTC)."""

    path: str
    symbol: str
    timeframe: str
    created: int
    updated: int
    unchanged: int
    total: int
    first_ts: datetime
    last_ts: datetime


def bars_import(*, path: str | os.PathLike, symbol: str, timeframe: str) -> ImportResult:
    """Import a bar file idempotently: new bars are created, changed ones updated.

    Raises BarFileError (nothing written) if any line is bad, OSError if the file is unreadable,
    ValueError for a bad symbol or timeframe.
    """
    symbol = symbol.strip() if isinstance(symbol, str) else symbol
    # The symbols a bot may trade (botconfig.SYMBOL_RE): bars under any other name could never be used.
    if not isinstance(symbol, str) or len(symbol) > SYMBOL_MAX_LENGTH or not SYMBOL_RE.match(symbol):
        shown = repr(symbol) if len(repr(symbol)) <= 60 else f"{repr(symbol)[:60]}..."
        raise ValueError(f"invalid symbol {shown}: 1..{SYMBOL_MAX_LENGTH} characters of A-Z, 0-9 and ._:/- "
                         "starting with a letter or digit (e.g. ETH-USD)")
    if timeframe not in TIMEFRAME_SECONDS:
        raise ValueError(f"unknown timeframe {timeframe!r}; known: {', '.join(TIMEFRAME_SECONDS)}")
    # A FIFO or a device (/dev/zero, /dev/urandom) would be read forever: only regular files.
    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(21, "is a directory, not a CSV file", str(path))
    if not stat.S_ISREG(mode):
        raise BarFileError(path, 1, "not a regular file")
    # Parse everything first: a bad last line must not leave half a file in the store.
    bars = parse_bars_csv(path, symbol=symbol, timeframe=timeframe)
    source = bars.source
    incoming = [
        (int(t), (float(o), float(h), float(lo), float(c), float(v), source))
        for t, o, h, lo, c, v in zip(
            bars.ts, bars.open, bars.high, bars.low, bars.close, bars.volume, strict=True
        )
    ]
    first_ts = datetime.fromtimestamp(incoming[0][0], tz=UTC)
    last_ts = datetime.fromtimestamp(incoming[-1][0], tz=UTC)

    to_create: list[Bar] = []
    to_update: list[Bar] = []
    unchanged = 0
    with transaction.atomic():
        # One range read instead of a lookup per bar; the file is sorted, so first..last covers it.
        existing = {
            int(row[1].timestamp()): (row[0], row[2:])
            for row in Bar.objects.filter(
                symbol=symbol, timeframe=timeframe, ts__gte=first_ts, ts__lte=last_ts
            ).values_list("pk", "ts", *VALUE_FIELDS)
        }
        for ts, values in incoming:
            fields = dict(zip(VALUE_FIELDS, values, strict=True))
            found = existing.get(ts)
            if found is None:
                to_create.append(
                    Bar(
                        symbol=symbol,
                        timeframe=timeframe,
                        ts=datetime.fromtimestamp(ts, tz=UTC),
                        **fields,
                    )
                )
            elif found[1] != values:
                # Floats round-trip exactly through SQLite REAL and PostgreSQL double precision,
                # so equality here means the stored bar is identical.
                to_update.append(Bar(pk=found[0], **fields))
            else:
                unchanged += 1
        Bar.objects.bulk_create(to_create, batch_size=BATCH_SIZE)
        Bar.objects.bulk_update(to_update, VALUE_FIELDS, batch_size=BATCH_SIZE)

    return ImportResult(
        path=str(path),
        symbol=symbol,
        timeframe=timeframe,
        created=len(to_create),
        updated=len(to_update),
        unchanged=unchanged,
        total=len(incoming),
        first_ts=first_ts,
        last_ts=last_ts,
    )


def sample_data_load() -> list[ImportResult]:
    """Import the sample files vendored in paper/sample_data (ETH-USD and BTC-USD, 1d)."""
    return [
        bars_import(path=SAMPLE_DATA_DIR / name, symbol=symbol, timeframe=timeframe)
        for symbol, timeframe, name in SAMPLE_FILES
    ]
