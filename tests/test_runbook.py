"""The operator runbook over a copied paper-session root: list, show, health, alerts, index, promotion.

No database: every test builds an artifact root in tmp_path and reads it back through paper.runbook.
"""
from __future__ import annotations

import csv
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from paper import artifact_contract as c
from paper import runbook as rb
from tests import runbook_fixtures as fx
from tests.runbook_fixtures import NOW, SessionSpec, paper_root_build, session_write

END_FILES = [n for n in c.CANONICAL_FILES if n not in rb.START_FILES]


@pytest.fixture
def root(tmp_path) -> Path:
    return paper_root_build(tmp_path / "paper_sessions")


def by_id(records) -> dict[str, rb.SessionRecord]:
    return {r.session_id: r for r in records}


def dumped(obj) -> bytes:
    return json.dumps(obj, sort_keys=True).encode()


# -- list ----------------------------------------------------------------------------------------

def test_it_lists_every_session_oldest_first(root):
    records = rb.sessions_scan(root)

    assert [r.session_id for r in records] == fx.ORDER
    assert len(records) == 10


@pytest.mark.parametrize(
    ("session_id", "status", "terminal", "issue"),
    [
        (fx.GOOD, "success", True, None),
        (fx.WEAK, "success", True, None),
        (fx.FAILED, "failed", True, "failed: ValueError: no bars for ETH-USD in 2022-01-01..2023-12-31"),
        (fx.KILLED, "aborted", True, "aborted: kill_switch: armed by ops"),
        (fx.HALTED, "aborted", True, f"aborted: {fx.HALT_REASON}"),
        (fx.NO_METRICS, "success", True, "metrics.json: missing"),
        (fx.MISMATCH, "success", True,
         f"session_metadata.json: session_id 'ps_somewhere_else' does not match folder '{fx.MISMATCH}'"),
        (fx.STALE, "running", False, None),
        (fx.CORRUPT, "unknown", False, "session_status.json: not valid JSON (line 1)"),
        (fx.FRESH, "running", False, None),
    ],
)
def test_it_reads_status_terminal_and_issue_per_session(root, session_id, status, terminal, issue):
    record = by_id(rb.sessions_scan(root))[session_id]

    assert (record.status, record.terminal, record.issue) == (status, terminal, issue)


def test_it_reads_identity_timing_metrics_and_artifacts(root):
    good = by_id(rb.sessions_scan(root))[fx.GOOD]

    assert good.started_at == datetime(2026, 11, 20, 8, tzinfo=UTC)
    assert good.finished_at == datetime(2026, 11, 20, 9, 2, tzinfo=UTC)
    assert good.started_at.utcoffset() == timedelta(0)
    assert good.duration_seconds == 3720.0
    assert (good.request_id, good.mode, good.ticker, good.strategy, good.bot_name) == (
        f"req_{fx.GOOD}", "replay", "ETH-USD", "sma_crossover", "eth-sma")
    assert good.status_reason == "completed"
    assert good.metrics["sharpe"] == 1.4
    assert good.artifacts == {name: name for name in c.CANONICAL_FILES}
    assert good.missing == []
    assert good.path == root / fx.GOOD


def test_it_expects_only_start_files_from_a_running_session(root):
    fresh = by_id(rb.sessions_scan(root))[fx.FRESH]

    assert fresh.missing == END_FILES
    assert fresh.problems == []
    assert fresh.duration_seconds is None
    assert fresh.metrics == {}


def test_it_ignores_files_index_and_hidden_folders_in_the_root(root):
    rb.index_write(root)
    (root / ".tmp-copy").mkdir()
    (root / "notes.json").write_text("{not json")

    assert [r.session_id for r in rb.sessions_scan(root)] == fx.ORDER


def test_it_lists_an_empty_root_and_refuses_a_missing_one(tmp_path):
    assert rb.sessions_scan(tmp_path) == []
    assert rb.format_list([]) == "no paper sessions"
    with pytest.raises(rb.RunbookError, match="not found"):
        rb.sessions_scan(tmp_path / "nope")


def test_format_list_shows_id_status_terminal_start_duration_and_issue(root):
    text = rb.format_list(rb.sessions_scan(root))
    lines = text.splitlines()

    assert lines[0].split() == ["SESSION", "STATUS", "TERMINAL", "STARTED", "DURATION", "REASON", "/", "ISSUE"]
    assert len(lines) == 11
    good = next(line for line in lines if line.startswith(fx.GOOD))
    assert "success" in good and "yes" in good and "2026-11-20 08:00:00 UTC" in good and "1h 02m 00s" in good
    assert "failed: ValueError" in next(line for line in lines if line.startswith(fx.FAILED))


# -- broken folders never raise ------------------------------------------------------------------

BROKEN = [
    ("status missing", c.STATUS, None, "session_status.json: missing", "unknown"),
    ("status garbled", c.STATUS, b'{"status": ', "session_status.json: not valid JSON (line 1)", "unknown"),
    ("status a list", c.STATUS, b"[1, 2]", "session_status.json: not a JSON object", "unknown"),
    ("status not utf-8", c.STATUS, b"\xff\xfe\x00", "session_status.json: not UTF-8 text", "unknown"),
    ("status a folder", c.STATUS, "dir", "session_status.json: missing", "unknown"),
    ("status word unknown", c.STATUS, b'{"status": "weird"}',
     "status 'weird' is not one of running/success/failed/aborted", "unknown"),
    ("metrics garbled", c.METRICS, b"{\n\n oops", "metrics.json: not valid JSON (line 3)", "success"),
    ("metadata garbled", c.METADATA, b"", "session_metadata.json: not valid JSON (line 1)", "success"),
    ("report wrong contract", c.REPORT, b'{"machine_contract": {"contract_type": "quantlab.run.result"}}',
     "report.json: contract_type 'quantlab.run.result' is not quantlab.paper.result", "success"),
]


def _break(folder: Path, name: str, content) -> None:
    target = folder / name
    target.unlink()
    if content == "dir":
        target.mkdir()
    elif content is not None:
        target.write_bytes(content)


@pytest.mark.parametrize(("label", "name", "content", "issue", "status"), BROKEN, ids=[b[0] for b in BROKEN])
def test_a_broken_file_becomes_the_issue_and_nothing_raises(tmp_path, label, name, content, issue, status):
    root = paper_root_build(tmp_path / "paper_sessions", specs=[fx.SPECS[0]])
    _break(root / fx.GOOD, name, content)

    record = rb.session_show(root, fx.GOOD)
    assert (record.issue, record.status) == (issue, status)

    # Every runbook surface still answers for the whole root.
    assert rb.format_list(rb.sessions_scan(root))
    assert rb.format_show(record)
    assert rb.format_health(rb.health(root, now=NOW))
    assert rb.format_alerts(rb.alerts(root, now=NOW))
    assert rb.format_promotion(rb.promotion(root, contract=rb.PromotionContract()))
    rb.index_write(root)
    assert rb.promotion(root, contract=rb.PromotionContract())["ready"] == []


def test_a_bad_timestamp_is_a_problem_not_a_crash(tmp_path):
    root = paper_root_build(tmp_path / "r", specs=[fx.SPECS[0]])
    status_path = root / fx.GOOD / c.STATUS
    doc = json.loads(status_path.read_text())
    doc["started_at"] = "yesterday-ish"
    status_path.write_text(json.dumps(doc))

    record = rb.sessions_scan(root)[0]
    assert record.started_at is None and record.duration_seconds is None
    assert record.issue == "session_status.json: started_at 'yesterday-ish' is not an ISO-8601 time"


# -- show ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("how", "args"),
    [
        ("session folder", lambda root: (root / fx.FAILED,)),
        ("root and exact id", lambda root: (root, fx.FAILED)),
        ("root and unique prefix", lambda root: (root, "ps_20261120_12")),
    ],
)
def test_show_finds_a_session(root, how, args):
    record = rb.session_show(*args(root))

    assert record.session_id == fx.FAILED
    assert record.error_type == "ValueError"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (lambda root: (root, "ps_nope"), "no paper session 'ps_nope'"),
        (lambda root: (root, "ps_20261120"), "ambiguous"),
        (lambda root: (root, "../paper_sessions"), "not a paper session id"),
        (lambda root: (root / "ps_missing",), "not found"),
        (lambda root: (root,), "looks like a paper session root"),
    ],
)
def test_show_refuses_what_it_cannot_pin_down(root, args, message):
    with pytest.raises(rb.RunbookError, match=message):
        rb.session_show(*args(root))


def test_show_prefers_an_exact_id_over_a_longer_one_it_prefixes(tmp_path):
    root = paper_root_build(tmp_path / "r", specs=[
        SessionSpec("ps_a", c.SUCCESS, NOW - timedelta(hours=2), "completed", finished_at=NOW),
        SessionSpec("ps_ab", c.SUCCESS, NOW - timedelta(hours=1), "completed", finished_at=NOW),
    ])

    assert rb.session_show(root, "ps_a").session_id == "ps_a"


def test_format_show_answers_the_runbook_questions(root):
    record = rb.session_show(root, fx.FAILED)
    text = rb.format_show(record)

    for expected in (
        fx.FAILED, "failed", "terminal       yes", "ran for        7s", f"req_{fx.FAILED}",
        "ValueError", "no bars for ETH-USD in 2022-01-01..2023-12-31",
        str((root / fx.FAILED / c.TRADES).absolute()), str((root / fx.FAILED / c.EQUITY_PNG).absolute()),
    ):
        assert expected in text


def test_format_show_tells_how_long_a_running_session_has_run(root):
    text = rb.format_show(rb.session_show(root, fx.FRESH), now=NOW)

    assert "terminal       no" in text
    assert "30m 00s so far (still running)" in text
    assert "missing: metrics.json" in text


# -- health --------------------------------------------------------------------------------------

def test_health_counts_statuses_and_names_latest_and_latest_issue(root):
    pulse = rb.health(root, now=NOW)

    assert pulse["total"] == 10
    assert pulse["counts"] == {"running": 2, "success": 4, "failed": 1, "aborted": 2, "unknown": 1}
    assert pulse["generated_at"] == "2026-11-21T12:00:00+00:00"
    assert pulse["root"] == str(root)
    assert pulse["latest"]["session_id"] == fx.FRESH
    assert pulse["latest"]["status"] == "running"
    assert pulse["latest"]["started_at"] == "2026-11-21T11:30:00+00:00"
    assert pulse["latest_issue"] == {
        "session_id": fx.CORRUPT, "status": "unknown", "issue": "session_status.json: not valid JSON (line 1)",
    }
    json.dumps(pulse)  # JSON-ready as is

    text = rb.format_health(pulse)
    assert "total 10: running 2, success 4, failed 1, aborted 2, unknown 1" in text
    assert f"latest: {fx.FRESH} running" in text
    assert f"latest issue: {fx.CORRUPT} [unknown]" in text


def test_health_of_an_empty_root(tmp_path):
    pulse = rb.health(tmp_path, now=NOW)

    assert (pulse["total"], pulse["latest"], pulse["latest_issue"]) == (0, None, None)
    assert set(pulse["counts"].values()) == {0}
    assert "latest: -" in rb.format_health(pulse)


# -- alerts --------------------------------------------------------------------------------------

def test_alerts_classify_each_session(root):
    snapshot = rb.alerts(root, now=NOW)

    assert [(a["code"], a["session_id"]) for a in snapshot["alerts"]] == [
        (c.ALERT_FAILED, fx.FAILED),
        (c.ALERT_ABORTED, fx.KILLED),
        (c.ALERT_ABORTED, fx.HALTED),
        (c.ALERT_STALE, fx.STALE),
        (c.ALERT_UNREADABLE, fx.CORRUPT),
    ]
    assert snapshot["counts"] == {c.ALERT_ABORTED: 2, c.ALERT_FAILED: 1, c.ALERT_STALE: 1, c.ALERT_UNREADABLE: 1}
    assert (snapshot["generated_at"], snapshot["root"], snapshot["stale_minutes"]) == (
        "2026-11-21T12:00:00+00:00", str(root), 60.0)
    first = snapshot["alerts"][0]
    assert set(first) == {"code", "session_id", "status", "status_reason", "started_at", "updated_at", "message"}


@pytest.mark.parametrize(
    ("session_id", "message"),
    [
        (fx.FAILED, "failed: ValueError: no bars for ETH-USD in 2022-01-01..2023-12-31"),
        (fx.KILLED, "aborted: kill_switch: armed by ops"),
        (fx.HALTED, f"risk halt: aborted by the risk gate ({fx.HALT_REASON})"),
        (fx.STALE, "running, last updated_at 2026-11-21T09:00:00+00:00 is 3h 00m 00s old (stale after 60 min)"),
        (fx.CORRUPT, "session folder unreadable: session_status.json: not valid JSON (line 1)"),
    ],
)
def test_alert_messages_say_why(root, session_id, message):
    alert = next(a for a in rb.alerts(root, now=NOW)["alerts"] if a["session_id"] == session_id)

    assert alert["message"] == message


def test_alerts_are_byte_identical_for_the_same_root_and_now(root):
    assert dumped(rb.alerts(root, now=NOW)) == dumped(rb.alerts(root, now=NOW))
    assert dumped(rb.alerts(root, now=NOW, stale_minutes=60)) == dumped(rb.alerts(root, now=NOW, stale_minutes=60.0))


def test_alerts_do_not_depend_on_folder_creation_order(tmp_path):
    root = tmp_path / "paper_sessions"
    paper_root_build(root, specs=fx.SPECS)
    forward = dumped(rb.alerts(root, now=NOW))
    shutil.rmtree(root)
    paper_root_build(root, specs=tuple(reversed(fx.SPECS)))

    assert dumped(rb.alerts(root, now=NOW)) == forward
    # Two roots built in different orders agree on everything but their own path.
    other = paper_root_build(tmp_path / "other", specs=fx.SPECS[::2] + fx.SPECS[1::2])
    assert rb.alerts(other, now=NOW)["alerts"] == json.loads(forward)["alerts"]


@pytest.mark.parametrize(
    ("stale_minutes", "stale"),
    [
        (10, [fx.STALE]),          # fresh heartbeat is 1 min old
        (60, [fx.STALE]),
        (179, [fx.STALE]),
        (180, []),                 # exactly 3 h old is not yet older than 3 h
        (240, []),
        (0.5, [fx.STALE, fx.FRESH]),
    ],
)
def test_stale_threshold_decides_what_is_stale(root, stale_minutes, stale):
    snapshot = rb.alerts(root, now=NOW, stale_minutes=stale_minutes)

    assert [a["session_id"] for a in snapshot["alerts"] if a["code"] == c.ALERT_STALE] == stale
    assert snapshot["counts"].get(c.ALERT_STALE, 0) == len(stale)


def test_stale_falls_back_to_started_at_without_a_heartbeat(tmp_path):
    root = paper_root_build(tmp_path / "r", specs=[SessionSpec("ps_quiet", c.RUNNING, NOW - timedelta(hours=2))])
    status_path = root / "ps_quiet" / c.STATUS
    doc = json.loads(status_path.read_text())
    doc["updated_at"] = None
    status_path.write_text(json.dumps(doc))

    assert [a["code"] for a in rb.alerts(root, now=NOW, stale_minutes=60)["alerts"]] == [c.ALERT_STALE]
    assert "last started_at" in rb.alerts(root, now=NOW)["alerts"][0]["message"]
    assert rb.alerts(root, now=NOW, stale_minutes=180)["alerts"] == []


def test_alerts_refuse_a_negative_threshold(root):
    with pytest.raises(rb.RunbookError, match="stale minutes"):
        rb.alerts(root, now=NOW, stale_minutes=-1)


def test_format_alerts_is_a_table_with_the_threshold(root, tmp_path):
    text = rb.format_alerts(rb.alerts(root, now=NOW, stale_minutes=60))

    assert "stale after 60 min" in text
    assert "5 alerts" in text
    assert f"{c.ALERT_STALE}" in text and fx.STALE in text
    empty = tmp_path / "empty"
    empty.mkdir()
    assert rb.format_alerts(rb.alerts(empty, now=NOW)).endswith("no alerts")


# -- index ---------------------------------------------------------------------------------------

def _csv_rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_index_writes_csv_and_json_with_one_row_per_session(root):
    csv_path, json_path = rb.index_write(root)

    assert (csv_path, json_path) == (root / c.INDEX_CSV, root / c.INDEX_JSON)
    doc = json.loads(json_path.read_text())
    assert doc["root"] == str(root)
    assert "generated_at" not in doc
    json_rows = doc["sessions"]
    csv_rows = _csv_rows(csv_path)
    assert [r["session_id"] for r in json_rows] == [r["session_id"] for r in csv_rows] == fx.ORDER
    assert list(csv_rows[0]) == list(rb.INDEX_COLUMNS) == list(json_rows[0])
    assert csv_rows == [{k: rb.csv_cell(v) for k, v in row.items()} for row in json_rows]
    assert not [p.name for p in root.iterdir() if p.name.endswith(".tmp")]


def test_index_rows_carry_status_timing_identity_and_metrics(root):
    _, json_path = rb.index_write(root)
    rows = {r["session_id"]: r for r in json.loads(json_path.read_text())["sessions"]}

    assert rows[fx.GOOD] == {
        "session_id": fx.GOOD, "status": "success", "terminal": True, "status_reason": "completed",
        "started_at": "2026-11-20T08:00:00+00:00", "finished_at": "2026-11-20T09:02:00+00:00",
        "duration_seconds": 3720.0, "request_id": f"req_{fx.GOOD}", "mode": "replay", "ticker": "ETH-USD",
        "strategy": "sma_crossover", "bot_name": "eth-sma", "total_return": 0.21, "sharpe": 1.4,
        "max_drawdown": 0.12, "num_trades": 8, "num_fills": 16, "total_pnl": 2100.0, "issue": None,
    }
    assert rows[fx.CORRUPT]["status"] == "unknown"
    assert rows[fx.CORRUPT]["issue"] == "session_status.json: not valid JSON (line 1)"
    good_csv = next(r for r in _csv_rows(root / c.INDEX_CSV) if r["session_id"] == fx.GOOD)
    assert (good_csv["terminal"], good_csv["issue"], good_csv["sharpe"]) == ("true", "", "1.4")


def test_index_rewrite_is_byte_identical_and_not_scanned_as_sessions(root):
    first = [p.read_bytes() for p in rb.index_write(root)]
    second = [p.read_bytes() for p in rb.index_write(root)]

    assert first == second
    assert len(rb.sessions_scan(root)) == 10


def _metrics_edit_in_place(root: Path) -> None:
    # Same size, new content: only the mtime (and the bytes) say it changed.
    path = root / fx.GOOD / c.METRICS
    doc = json.loads(path.read_text())
    doc["sharpe"] = 9.9 if doc["sharpe"] != 9.9 else 1.1
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    with open(path, "r+", encoding="utf-8") as fh:
        fh.write(text)
        fh.truncate()


def _status_replaced(root: Path) -> None:
    path = root / fx.WEAK / c.STATUS
    doc = json.loads(path.read_text())
    doc["status"], doc["status_reason"] = "failed", "replaced by rename"
    tmp = path.with_name(".status.tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)


CACHE_CHANGES = [
    ("nothing", lambda root: None),
    ("a file edited in place", _metrics_edit_in_place),
    ("a file replaced by rename", _status_replaced),
    ("a file removed", lambda root: (root / fx.FAILED / c.METRICS).unlink()),
    ("an artifact removed from the subfolder", lambda root: (root / fx.GOOD / c.EQUITY_PNG).unlink()),
    ("a folder removed", lambda root: shutil.rmtree(root / fx.HALTED)),
    ("a folder added", lambda root: session_write(root, SessionSpec("ps_20261121_2300_new", "success",
                                                                    NOW - timedelta(hours=1)))),
    ("a folder made unreadable", lambda root: (root / fx.KILLED / c.STATUS).write_bytes(b"{not json")),
]


@pytest.mark.parametrize(("label", "change"), CACHE_CHANGES, ids=[label for label, _ in CACHE_CHANGES])
def test_a_cached_scan_sees_every_change_a_fresh_scan_sees(root, label, change):
    cache: dict = {}
    before = [rb.index_row(r) for r in rb.sessions_scan(root, cache)]
    assert before == [rb.index_row(r) for r in rb.sessions_scan(root)]
    change(root)

    cached = [rb.index_row(r) for r in rb.sessions_scan(root, cache)]
    fresh = [rb.index_row(r) for r in rb.sessions_scan(root)]
    assert cached == fresh
    assert (cached == before) == (label == "nothing")
    assert set(cache) == {p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}


def test_a_cached_scan_does_not_read_unchanged_folders(root, monkeypatch):
    cache: dict = {}
    rb.sessions_scan(root, cache)
    _metrics_edit_in_place(root)
    read = []
    real = rb.session_read
    monkeypatch.setattr(rb, "session_read", lambda path: read.append(path.name) or real(path))
    rb.sessions_scan(root, cache)
    assert read == [fx.GOOD]


def test_index_refuses_a_missing_root(tmp_path):
    with pytest.raises(rb.RunbookError):
        rb.index_write(tmp_path / "nope")


# -- promotion -----------------------------------------------------------------------------------

EXPECTED_BLOCKED = {
    fx.WEAK: ["sharpe 0.12 < 0.5", "max drawdown 41.0% > 35.0%"],
    fx.FAILED: ["status failed (ValueError: no bars for ETH-USD in 2022-01-01..2023-12-31)",
                "metrics unknown: bars, num_trades, sharpe, max_drawdown"],
    fx.KILLED: ["status aborted (kill_switch: armed by ops)"],
    fx.HALTED: [f"status aborted ({fx.HALT_REASON})", "risk halt", "max drawdown 82.0% > 35.0%"],
    fx.NO_METRICS: ["missing artifacts: metrics.json", "no metrics to check"],
    fx.MISMATCH: [f"session_metadata.json: session_id 'ps_somewhere_else' does not match folder '{fx.MISMATCH}'"],
    fx.STALE: ["still running"],
    fx.CORRUPT: ["session folder unreadable: session_status.json: not valid JSON (line 1)"],
    fx.FRESH: ["still running"],
}


def test_promotion_splits_ready_from_blocked_with_reasons(root):
    report = rb.promotion(root, contract=rb.PromotionContract())

    assert report["ready"] == [{"session_id": fx.GOOD, "started_at": "2026-11-20T08:00:00+00:00",
                                "sharpe": 1.4, "max_drawdown": 0.12, "num_trades": 8, "bars": 300}]
    assert {b["session_id"]: b["reasons"] for b in report["blocked"]} == EXPECTED_BLOCKED
    assert [b["session_id"] for b in report["blocked"]] == [s for s in fx.ORDER if s != fx.GOOD]
    assert report["latest_ready"]["session_id"] == fx.GOOD
    assert report["latest_blocked"]["session_id"] == fx.FRESH
    assert report["contract"] == {"min_bars": 100, "min_trades": 3, "min_sharpe": 0.5, "max_drawdown": 0.35,
                                  "require_success": True, "forbid_halt": True, "require_complete_artifacts": True}


@pytest.mark.parametrize(
    ("metrics", "reasons"),
    [
        ({"bars": 42}, ["only 42 bars < 100"]),
        ({"num_trades": 2}, ["only 2 trades < 3"]),
        ({"sharpe": 0.5, "max_drawdown": 0.35, "bars": 100, "num_trades": 3}, []),  # the edges pass
        ({"sharpe": None}, ["metrics unknown: sharpe"]),
        ({"halt": {"rule": "daily_loss"}}, ["risk halt"]),
    ],
)
def test_promotion_checks_each_threshold(tmp_path, metrics, reasons):
    spec = SessionSpec("ps_one", c.SUCCESS, NOW - timedelta(hours=1), "completed", finished_at=NOW,
                       metrics={**fx.GOOD_METRICS, **metrics})
    report = rb.promotion(paper_root_build(tmp_path / "r", specs=[spec]), contract=rb.PromotionContract())

    assert (report["blocked"][0]["reasons"] if report["blocked"] else []) == reasons


@pytest.mark.parametrize(
    ("contract", "ready"),
    [
        (rb.PromotionContract(), [fx.GOOD]),
        (rb.PromotionContract(min_sharpe=0.1, max_drawdown=0.5), [fx.GOOD, fx.WEAK]),
        (rb.PromotionContract(min_sharpe=2.0), []),
        (rb.PromotionContract(require_success=False), [fx.GOOD, fx.KILLED]),
        (rb.PromotionContract(require_success=False, forbid_halt=False, max_drawdown=0.9),
         [fx.GOOD, fx.KILLED, fx.HALTED]),
        (rb.PromotionContract(require_complete_artifacts=False, min_trades=9), []),
    ],
)
def test_a_custom_contract_changes_the_outcome(root, contract, ready):
    report = rb.promotion(root, contract=contract)

    assert [r["session_id"] for r in report["ready"]] == ready
    assert len(report["ready"]) + len(report["blocked"]) == 10
    assert report["contract"] == contract.to_dict()
    assert report["latest_ready"] == (report["ready"][-1] if ready else None)


def test_format_promotion_prints_the_contract_thresholds_first(root):
    contract = rb.PromotionContract(min_bars=250, min_trades=4, min_sharpe=0.8, max_drawdown=0.2)
    text = rb.format_promotion(rb.promotion(root, contract=contract))
    head = text.split("ready (")[0]

    for line in ("min bars                    250", "min trades                  4",
                 "min sharpe                  0.8", "max drawdown                20.0%",
                 "require success             yes", "forbid risk halt            yes",
                 "require complete artifacts  yes"):
        assert line in head
    assert text.startswith("promotion contract:")
    assert f"latest blocked: {fx.FRESH} (still running)" in text
    assert "    - sharpe 0.12 < 0.8" in text


def test_promotion_contract_wants_drawdown_as_a_fraction():
    with pytest.raises(rb.RunbookError, match="fraction"):
        rb.PromotionContract(max_drawdown=35)


def test_promotion_of_an_empty_root(tmp_path):
    report = rb.promotion(tmp_path, contract=rb.PromotionContract())

    assert (report["ready"], report["blocked"], report["latest_ready"], report["latest_blocked"]) == ([], [], None, None)


# -- the command line ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("argv", "code", "expected"),
    [
        (["health", "{root}"], 0, "total 10"),
        (["alerts", "{root}"], 0, '"PAPER_SESSION_STALE"'),
        (["alerts", "{root}", "--text", "--stale-minutes", "240"], 0, "stale after 240 min"),
        (["show", "{root}", "ps_20261120_08"], 0, fx.GOOD),
        (["promotion", "{root}"], 0, "promotion contract:"),
        (["list", "{root}", "--json"], 0, '"session_id": "ps_20261120_0800_good"'),
        (["index", "{root}"], 0, c.INDEX_CSV),
        (["show", "{root}", "ps_nope"], 2, ""),
    ],
)
def test_main_runs_each_command_without_django(root, capsys, argv, code, expected):
    assert rb.main([a.format(root=root) for a in argv], now=NOW) == code

    out, err = capsys.readouterr()
    assert expected in out
    assert ("error: no paper session" in err) == (code == 2)


def test_session_write_lays_out_every_canonical_file(tmp_path):
    folder = session_write(tmp_path, fx.SPECS[0])

    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == sorted(c.CANONICAL_FILES)
    assert (folder / c.EQUITY_PNG).read_bytes().startswith(b"\x89PNG")
