"""Parsing OHLCV CSV files (Yahoo or generic layout) into validated `Bars`.

Every rejected file raises `BarFileError` naming the file and the physical line at fault.
"""
from __future__ import annotations

import codecs
import csv
import math
import os
import re
from datetime import UTC, datetime

from .bars import Bars, timeframe_seconds

# Lower-cased header name -> Bars field. Column order in the file is free; the set is not.
YAHOO_COLUMNS = {
    "date": "ts",
    "open": "open",
    "high": "high",
    "low": "low",
    "close": "close",
    "adj close": None,  # dividend-adjusted close; meaningless for crypto and never used
    "volume": "volume",
}
GENERIC_COLUMNS = {
    "timestamp": "ts",
    "open": "open",
    "high": "high",
    "low": "low",
    "close": "close",
    "volume": "volume",
}
LAYOUTS = {"yahoo": YAHOO_COLUMNS, "generic": GENERIC_COLUMNS}

PRICE_FIELDS = ("open", "high", "low", "close")
NUMBER_FIELDS = (*PRICE_FIELDS, "volume")

_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_EPOCH_RE = re.compile(r"[+-]?\d+", re.ASCII)
# Epoch seconds past this (year 5138) are almost certainly milliseconds; refuse rather than
# store bars thousands of years in the future.
_MAX_EPOCH_SECONDS = 100_000_000_000
# Bars are dated from 1900 up to (not including) 2200: anything else is a typo or a unit mix-up.
MIN_TS = -2_208_988_800  # 1900-01-01T00:00:00Z
MAX_TS = 7_258_118_400  # 2200-01-01T00:00:00Z
# A price or volume past these is not market data (and a sum of such values is inf).
MAX_PRICE = 1e12
MAX_VOLUME = 1e18


class BarFileError(ValueError):
    """A bar file that cannot be imported; `line` is 1-based, the header is line 1."""

    def __init__(self, path: str | os.PathLike, line: int, reason: str) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        super().__init__(f"{self.path}:{line}: {reason}")


def parse_timestamp(text: str) -> int:
    """`YYYY-MM-DD`, ISO-8601 datetime (naive = UTC) or integer epoch seconds -> epoch seconds.

    Raises ValueError with a short reason; the caller adds file, line and column.
    """
    if _EPOCH_RE.fullmatch(text):
        if len(text) > 20:
            raise ValueError("epoch value too large for seconds (milliseconds?)")
        value = int(text)
        if abs(value) >= _MAX_EPOCH_SECONDS:
            raise ValueError("epoch value too large for seconds (milliseconds?)")
    else:
        if _DATE_RE.fullmatch(text):
            # date.fromisoformat would also take "20240101" or week dates; only the plain form is a date.
            dt = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
        else:
            if not text.isascii():
                raise ValueError("not an ISO-8601 time")
            dt = datetime.fromisoformat(text)
            try:
                dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
            except OverflowError:
                raise ValueError("out of range: bars are dated from 1900 to 2199") from None
        if dt.microsecond:
            # Bars open on whole seconds; truncating would silently move the bar.
            raise ValueError("fractional seconds are not supported")
        value = int(dt.timestamp())
    if not MIN_TS <= value < MAX_TS:
        raise ValueError("out of range: bars are dated from 1900 to 2199")
    return value


def _read_header(path: str, row: list[str] | None) -> tuple[list[str], list[str | None]]:
    """Return (column names as written, Bars field per column) or raise on line 1."""
    if row is None:
        raise BarFileError(path, 1, "empty file (no header, no data rows)")
    written = [name.strip() for name in row]
    names = [name.lower() for name in written]
    seen = set()
    for name in names:
        if name in seen:
            raise BarFileError(path, 1, f"duplicate column {name!r} in header")
        seen.add(name)
    # Pick the layout by its time column; the rest of the header must then match it exactly.
    if "date" in seen:
        layout = "yahoo"
    elif "timestamp" in seen:
        layout = "generic"
    else:
        expected = " or ".join(",".join(cols) for cols in LAYOUTS.values())
        raise BarFileError(
            path, 1, f"unrecognized header {','.join(written)!r}: expected {expected}"
        )
    columns = LAYOUTS[layout]
    unknown = [n for n in names if n not in columns]
    if unknown:
        listed = ", ".join(map(repr, unknown))
        raise BarFileError(path, 1, f"unknown column(s) {listed} for {layout} layout")
    missing = [n for n in columns if n not in seen]
    if missing:
        listed = ", ".join(map(repr, missing))
        raise BarFileError(path, 1, f"missing column(s) {listed} for {layout} layout")
    return written, [columns[n] for n in names]


def parse_bars_csv(path: str | os.PathLike, *, symbol: str, timeframe: str) -> Bars:
    """Read and validate a whole bar file; raise BarFileError at the first bad line."""
    timeframe_seconds(timeframe)  # unknown timeframe is a caller error, not a file error
    spath = str(path)
    cols: dict[str, list] = {name: [] for name in ("ts", *NUMBER_FIELDS)}
    # utf-8-sig: spreadsheet exports often start with a BOM that would corrupt the first name.
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        try:
            _read_rows(spath, reader, cols)
        except UnicodeDecodeError:
            # The decoder reads ahead in chunks, so the reader's line count is not where the bad byte is.
            line, column = _first_undecodable(path)
            raise BarFileError(spath, line or reader.line_num + 1, f"not UTF-8 text (byte {column} of the line)"
                               if line else "not UTF-8 text") from None
        except csv.Error as exc:
            raise BarFileError(spath, reader.line_num, f"malformed CSV: {exc}") from None
    return Bars.from_columns(symbol=symbol, timeframe=timeframe, source="csv", **cols)


def _first_undecodable(path: str | os.PathLike) -> tuple[int, int]:
    """(line, 1-based byte in it) of the first line that is not UTF-8, or (0, 0).

    UTF-8 never uses the newline byte inside a character, so lines can be checked one at a time.
    """
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return number, exc.start + 1
    return 0, 0


def _read_rows(path: str, reader, cols: dict[str, list]) -> None:
    # Errors name columns as the file writes them ("Close"), so they match what the user sees.
    names_by_index, fields = _read_header(path, next(reader, None))
    width = len(fields)
    prev_ts: int | None = None
    prev_line = 1
    for row in reader:
        line = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank lines (e.g. a trailing newline) carry no bar
        if len(row) != width:
            raise BarFileError(path, line, f"expected {width} fields, got {len(row)}")
        values: dict[str, float | int] = {}
        for cell, field, name in zip(row, fields, names_by_index, strict=True):
            if field is None:
                continue
            text = cell.strip()
            if not text:
                raise BarFileError(path, line, f"missing value in column {name!r}")
            if field == "ts":
                try:
                    values["ts"] = parse_timestamp(text)
                except ValueError as exc:
                    raise BarFileError(
                        path, line, f"unparsable date in column {name!r}: {text!r} ({exc})"
                    ) from None
                continue
            try:
                number = float(text)
            except ValueError:
                raise BarFileError(
                    path, line, f"unparsable number in column {name!r}: {text!r}"
                ) from None
            if not math.isfinite(number):
                raise BarFileError(path, line, f"non-finite number in column {name!r}: {text!r}")
            values[field] = number
        _check_bar(path, line, values)
        ts = int(values["ts"])
        if prev_ts is not None and ts <= prev_ts:
            what = "duplicate timestamp" if ts == prev_ts else "timestamp out of order"
            raise BarFileError(
                path, line, f"{what}: {ts} is not after {prev_ts} (line {prev_line})"
            )
        prev_ts, prev_line = ts, line
        for key, value in values.items():
            cols[key].append(value)
    if prev_ts is None:
        raise BarFileError(path, max(reader.line_num, 1), "no data rows")


def _check_bar(path: str, line: int, v: dict) -> None:
    for name in PRICE_FIELDS:
        if v[name] <= 0:
            raise BarFileError(path, line, f"non-positive price in column {name!r}: {v[name]}")
        if v[name] > MAX_PRICE:
            raise BarFileError(path, line, f"price in column {name!r} is absurd: {v[name]:g} > {MAX_PRICE:g}")
    if v["volume"] < 0:
        raise BarFileError(path, line, f"negative volume: {v['volume']}")
    if v["volume"] > MAX_VOLUME:
        raise BarFileError(path, line, f"volume is absurd: {v['volume']:g} > {MAX_VOLUME:g}")
    if v["high"] < v["low"]:
        raise BarFileError(path, line, f"high {v['high']} is below low {v['low']}")
    for name in ("open", "close"):
        if not v["low"] <= v[name] <= v["high"]:
            raise BarFileError(
                path, line, f"{name} {v[name]} outside [low {v['low']}, high {v['high']}]"
            )
