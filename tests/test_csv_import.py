"""CSV bar import: parser validation, idempotent store writes, and the import_bars command.

Every bad-file case must name the file and line and leave the bar store untouched.
"""
from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from paper.engine.csvbars import BarFileError, parse_bars_csv
from paper.models import Bar
from paper.services import bars_import

ROOT = Path(__file__).resolve().parent.parent
GENERIC = "timestamp,open,high,low,close,volume"
YAHOO = "Date,Open,High,Low,Close,Adj Close,Volume"
DAY = 86_400
T0 = 1_704_067_200  # 2024-01-01T00:00:00Z


def good_rows(n: int, start: int = T0) -> list[str]:
    return [f"{start + i * DAY},{100 + i},{110 + i},{90 + i},{105 + i},{1000 + i}" for i in range(n)]


def write(tmp_path: Path, lines: list[str], name: str = "bars.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


# (id, file lines, expected line, fragments the message must contain)
BAD_FILES = [
    ("empty-file", [], 1, ["empty file"]),
    ("header-only", [GENERIC], 1, ["no data rows"]),
    ("unknown-column", [GENERIC + ",foo", *good_rows(1)], 1, ["unknown column", "'foo'"]),
    ("missing-column", ["timestamp,open,high,low,close", "1,2,2,2,2"], 1, ["missing column", "'volume'"]),
    ("no-time-column", ["when,open,high,low,close,volume", *good_rows(1)], 1, ["unrecognized header"]),
    ("no-header", good_rows(2), 1, ["unrecognized header"]),
    ("duplicate-column", [GENERIC + ",open", *good_rows(1)], 1, ["duplicate column"]),
    ("too-few-fields", [GENERIC, *good_rows(1), f"{T0 + DAY},1,2,1"], 3, ["expected 6 fields, got 4"]),
    ("too-many-fields", [GENERIC, *good_rows(1), f"{T0 + DAY},1,2,1,1,5,9"], 3, ["expected 6 fields, got 7"]),
    ("empty-field", [GENERIC, *good_rows(1), f"{T0 + DAY},1,,1,1,5"], 3, ["missing value", "'high'"]),
    ("bad-number", [GENERIC, *good_rows(1), f"{T0 + DAY},1,abc,1,1,5"], 3, ["unparsable number", "'high'", "'abc'"]),
    ("bad-date", [GENERIC, *good_rows(1), "2024-13-45,1,2,1,1,5"], 3, ["unparsable date", "'timestamp'", "'2024-13-45'"]),
    ("garbage-date", [GENERIC, *good_rows(1), "yesterday,1,2,1,1,5"], 3, ["unparsable date", "'yesterday'"]),
    ("epoch-millis", [GENERIC, "1704067200000,1,2,1,1,5"], 2, ["unparsable date", "milliseconds"]),
    ("nan", [GENERIC, *good_rows(1), f"{T0 + DAY},1,nan,1,1,5"], 3, ["non-finite", "'high'"]),
    ("inf", [GENERIC, *good_rows(1), f"{T0 + DAY},1,2,1,1,inf"], 3, ["non-finite", "'volume'"]),
    ("high-below-low", [GENERIC, *good_rows(1), f"{T0 + DAY},5,4,6,5,5"], 3, ["high 4.0 is below low 6.0"]),
    ("open-above-high", [GENERIC, *good_rows(1), f"{T0 + DAY},9,8,6,7,5"], 3, ["open 9.0 outside"]),
    ("open-below-low", [GENERIC, *good_rows(1), f"{T0 + DAY},5,8,6,7,5"], 3, ["open 5.0 outside"]),
    ("close-above-high", [GENERIC, *good_rows(1), f"{T0 + DAY},7,8,6,9,5"], 3, ["close 9.0 outside"]),
    ("close-below-low", [GENERIC, *good_rows(1), f"{T0 + DAY},7,8,6,5,5"], 3, ["close 5.0 outside"]),
    ("zero-price", [GENERIC, *good_rows(1), f"{T0 + DAY},1,2,0,1,5"], 3, ["non-positive price", "'low'"]),
    ("negative-price", [GENERIC, *good_rows(1), f"{T0 + DAY},-1,-1,-1,-1,5"], 3, ["non-positive price", "'open'"]),
    ("negative-volume", [GENERIC, *good_rows(1), f"{T0 + DAY},1,2,1,1,-5"], 3, ["negative volume"]),
    ("duplicate-ts", [GENERIC, *good_rows(3), f"{T0 + 2 * DAY},1,2,1,1,5"], 5, ["duplicate timestamp", "line 4"]),
    ("out-of-order", [GENERIC, *good_rows(3), f"{T0},1,2,1,1,5"], 5, ["out of order"]),
    (
        "yahoo-null",
        [YAHOO, "2024-01-01,1,2,1,1,1,5", "2024-01-02,null,null,null,null,null,null"],
        3,
        ["unparsable number", "'Open'", "'null'"],
    ),
    ("blank-lines-count", [GENERIC, *good_rows(1), "", "", f"{T0 + DAY},1,x,1,1,5"], 5, ["'x'"]),
    ("bad-last-row", [GENERIC, *good_rows(500), f"{T0 + 500 * DAY},1,2,1,1,-1"], 502, ["negative volume"]),
]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("lines", "line", "fragments"),
    [pytest.param(lines, line, frags, id=case) for case, lines, line, frags in BAD_FILES],
)
def test_bad_file_names_file_and_line_and_writes_nothing(tmp_path, lines, line, fragments):
    # Seed the store with overlapping bars so a partial write would be visible.
    bars_import(path=write(tmp_path, [GENERIC, *good_rows(3)], "seed.csv"), symbol="X-USD", timeframe="1d")
    before = list(Bar.objects.values_list("ts", "open", "high", "low", "close", "volume"))
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + ("\n" if lines else ""))

    with pytest.raises(BarFileError) as info:
        bars_import(path=path, symbol="X-USD", timeframe="1d")

    err = info.value
    assert err.path == str(path)
    assert err.line == line
    assert str(err).startswith(f"{path}:{line}: ")
    for fragment in fragments:
        assert fragment in str(err)
    assert list(Bar.objects.values_list("ts", "open", "high", "low", "close", "volume")) == before


def test_generic_layout_parses(tmp_path):
    path = write(tmp_path, [GENERIC, *good_rows(3)])
    bars = parse_bars_csv(path, symbol="X-USD", timeframe="1d")
    assert bars.source == "csv"
    assert bars.ts.dtype == np.int64
    assert bars.ts.tolist() == [T0, T0 + DAY, T0 + 2 * DAY]
    assert bars.open.tolist() == [100, 101, 102]
    assert bars.high.tolist() == [110, 111, 112]
    assert bars.low.tolist() == [90, 91, 92]
    assert bars.close.tolist() == [105, 106, 107]
    assert bars.volume.tolist() == [1000, 1001, 1002]


def test_yahoo_layout_uses_close_not_adj_close(tmp_path):
    # Header case and surrounding whitespace are ignored; a BOM is tolerated.
    path = tmp_path / "yahoo.csv"
    path.write_text(
        "\ufeff date , OPEN,High,low, Close ,adj close,VOLUME\n"
        "2024-01-01,10,12,9,11,5.5,100\n"
        "2024-01-02,11,13,10,12,6,0\n",
        encoding="utf-8",
    )
    bars = parse_bars_csv(path, symbol="ETH-USD", timeframe="1d")
    assert bars.ts.tolist() == [T0, T0 + DAY]
    assert bars.close.tolist() == [11, 12]
    assert bars.volume.tolist() == [100, 0]


def test_columns_in_any_order(tmp_path):
    path = write(tmp_path, ["volume,close,low,high,open,timestamp", f"7,5,4,6,5,{T0}"])
    bars = parse_bars_csv(path, symbol="X", timeframe="1d")
    assert (bars.open[0], bars.high[0], bars.low[0], bars.close[0], bars.volume[0]) == (5, 6, 4, 5, 7)


@pytest.mark.parametrize(
    "stamp",
    [
        "2024-01-01",
        "2024-01-01T00:00:00",
        "2024-01-01 00:00:00",
        "2024-01-01T00:00:00Z",
        "2024-01-01T02:00:00+02:00",
        "2023-12-31T19:00:00-05:00",
        "1704067200",
    ],
)
def test_timestamp_formats(tmp_path, stamp):
    path = write(tmp_path, [GENERIC, f"{stamp},1,2,1,1,5"])
    assert parse_bars_csv(path, symbol="X", timeframe="1d").ts.tolist() == [T0]


def test_unknown_timeframe_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown timeframe"):
        parse_bars_csv(write(tmp_path, [GENERIC, *good_rows(1)]), symbol="X", timeframe="2d")


def _stored(symbol="X-USD"):
    return list(
        Bar.objects.filter(symbol=symbol).values_list("ts", "open", "high", "low", "close", "volume", "source")
    )


@pytest.mark.django_db
def test_reimport_is_idempotent(tmp_path):
    path = write(tmp_path, [GENERIC, *good_rows(5)])
    first = bars_import(path=path, symbol="X-USD", timeframe="1d")
    assert (first.created, first.updated, first.unchanged, first.total) == (5, 0, 0, 5)
    assert first.first_ts == datetime(2024, 1, 1, tzinfo=UTC)
    assert first.last_ts == datetime(2024, 1, 5, tzinfo=UTC)
    stored = _stored()

    again = bars_import(path=path, symbol="X-USD", timeframe="1d")
    assert (again.created, again.updated, again.unchanged, again.total) == (0, 0, 5, 5)
    assert _stored() == stored
    assert Bar.objects.count() == 5


@pytest.mark.django_db
def test_changed_value_is_updated_and_new_rows_created(tmp_path):
    bars_import(path=write(tmp_path, [GENERIC, *good_rows(3)], "a.csv"), symbol="X-USD", timeframe="1d")
    rows = good_rows(4)
    rows[1] = f"{T0 + DAY},101,111,91,106.5,1001"  # close changed
    result = bars_import(path=write(tmp_path, [GENERIC, *rows], "b.csv"), symbol="X-USD", timeframe="1d")
    assert (result.created, result.updated, result.unchanged, result.total) == (1, 1, 2, 4)
    assert Bar.objects.count() == 4
    assert Bar.objects.get(ts=datetime(2024, 1, 2, tzinfo=UTC)).close == 106.5


@pytest.mark.django_db
def test_same_ts_other_symbol_or_timeframe_is_separate(tmp_path):
    path = write(tmp_path, [GENERIC, *good_rows(2)])
    bars_import(path=path, symbol="X-USD", timeframe="1d")
    bars_import(path=path, symbol="Y-USD", timeframe="1d")
    result = bars_import(path=path, symbol="X-USD", timeframe="1h")
    assert result.created == 2
    assert Bar.objects.count() == 6


@pytest.mark.django_db
def test_failure_during_write_rolls_back(tmp_path, monkeypatch):
    bars_import(path=write(tmp_path, [GENERIC, *good_rows(2)], "a.csv"), symbol="X-USD", timeframe="1d")
    before = _stored()
    rows = good_rows(4)
    rows[0] = f"{T0},100,110,90,104,1000"  # forces an update after the creates

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Bar.objects, "bulk_update", boom)
    with pytest.raises(RuntimeError):
        bars_import(path=write(tmp_path, [GENERIC, *rows], "b.csv"), symbol="X-USD", timeframe="1d")
    assert _stored() == before


@pytest.mark.django_db
def test_command_imports_and_reports(tmp_path):
    path = write(tmp_path, [GENERIC, *good_rows(3)])
    out = StringIO()
    call_command("import_bars", str(path), "--symbol", "X-USD", "--timeframe", "1d", stdout=out)
    assert out.getvalue().strip() == (
        f"imported X-USD 1d from {path}: 3 rows (3 new, 0 updated, 0 unchanged), 2024-01-01 .. 2024-01-03"
    )
    assert Bar.objects.count() == 3


@pytest.mark.django_db
def test_command_bad_file_exits_2_and_writes_nothing(tmp_path):
    path = write(tmp_path, [GENERIC, *good_rows(20), f"{T0 + 20 * DAY},1,2,1,1,-1"])
    with pytest.raises(CommandError) as info:
        call_command("import_bars", str(path), "--symbol", "X-USD", "--timeframe", "1d")
    assert info.value.returncode == 2
    assert str(info.value).startswith(f"{path}:22: ")
    assert Bar.objects.count() == 0


@pytest.mark.django_db
def test_command_missing_file_exits_2(tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(CommandError) as info:
        call_command("import_bars", str(path), "--symbol", "X-USD", "--timeframe", "1d")
    assert info.value.returncode == 2
    assert str(path) in str(info.value)


def test_command_rejects_unknown_timeframe(tmp_path):
    with pytest.raises(CommandError, match="invalid choice"):
        call_command("import_bars", "x.csv", "--symbol", "X-USD", "--timeframe", "2d")


def test_command_subprocess_exit_code_2(tmp_path):
    path = write(tmp_path, [GENERIC, *good_rows(2), f"{T0 + 2 * DAY},1,2,1,1,nan"], "bad.csv")
    # A throwaway SQLite file, so the subprocess can never touch a real database.
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'sub.sqlite3'}"}
    proc = subprocess.run(
        [sys.executable, "manage.py", "import_bars", str(path), "--symbol", "X-USD", "--timeframe", "1d"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"{path}:4: non-finite number in column 'volume'" in proc.stderr
    assert proc.stdout == ""
