"""`manage.py run` end to end: paper replays and research runs, their artifact folders, the
--json-request contract, signal lines, the automatic paper-session index and the operator
commands (--paper-sessions-*) over real run output and over the runbook fixture root.

Runs go through call_command in transaction=True tests with OUTPUTS_DIR in tmp_path. The
operator commands run in a separate Python process whose DATABASE_URL points at a SQLite file in
a folder that does not exist, so any query would fail: they must work without the database.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from bots.models import BacktestRun, Bot
from ledger.models import PaperFill, PaperTradingRun
from paper import artifact_contract as c
from paper.models import Bar
from tests import runbook_fixtures as fx
from tests.commands import manage_py_many

PROJECT = Path(__file__).resolve().parent.parent
RUNBOOK_ARGS = ("--ticker", "ETH-USD", "--start", "2022-01-01", "--end", "2023-12-31")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VALID_REQUEST = {"schema_version": "1.0", "request_id": "req_paper_001", "command": "run",
                 "params": {"ticker": "ETH-USD", "start": "2022-01-01", "end": "2023-12-31", "paper": True}}

db_tx = pytest.mark.django_db(transaction=True)


@pytest.fixture
def outputs(settings, tmp_path) -> Path:
    settings.OUTPUTS_DIR = tmp_path / "outputs"
    return settings.OUTPUTS_DIR


@pytest.fixture
def tight_bot(db):
    """A bot whose 0.5% drawdown limit halts the runbook replay: the session ends aborted."""
    from bots.services import bot_create

    return bot_create(name="tight", strategy="sma_crossover", params={"fast": 10, "slow": 30},
                      symbols=["ETH-USD"], timeframe="1d", risk={"max_drawdown_pct": 0.5})


def run(*args: str) -> tuple[int, str, str]:
    """call_command("run", ...) as (exit code, stdout, error message)."""
    out = io.StringIO()
    try:
        call_command("run", *args, stdout=out, stderr=io.StringIO())
    except CommandError as exc:
        return exc.returncode, out.getvalue(), str(exc)
    return 0, out.getvalue(), ""


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def session_dirs(outputs: Path) -> list[Path]:
    root = outputs / "paper_sessions"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def index_statuses(root: Path) -> tuple[dict, dict]:
    """{session_id: status} from paper_sessions_index.json and from the .csv."""
    from_json = {row["session_id"]: row["status"] for row in read_json(root / c.INDEX_JSON)["sessions"]}
    with open(root / c.INDEX_CSV, newline="", encoding="utf-8") as fh:
        from_csv = {row["session_id"]: row["status"] for row in csv.DictReader(fh)}
    return from_json, from_csv


def iso(value: str) -> datetime:
    t = datetime.fromisoformat(value)
    assert t.utcoffset() is not None, f"{value!r} is not an aware time"
    return t


# -- 1. the runbook's paper run ----------------------------------------------------------------

@db_tx
def test_paper_run_writes_a_row_and_a_complete_session_folder(outputs):
    code, out, _ = run(*RUNBOOK_ARGS, "--paper", "--report")

    assert code == 0
    row = PaperTradingRun.objects.get()
    assert (row.mode, row.status, row.status_reason, row.request_id) == ("replay", "success", "completed", "")
    assert [p.name for p in session_dirs(outputs)] == [row.id]
    folder = outputs / "paper_sessions" / row.id
    for name in c.CANONICAL_FILES:
        assert (folder / name).is_file(), name
    for name in (c.EQUITY_PNG, c.DRAWDOWN_PNG):
        assert (folder / name).read_bytes().startswith(PNG_SIGNATURE), name

    md = (folder / c.RUN_REPORT).read_text()
    assert "](artifacts/equity.png)" in md and "](artifacts/drawdown.png)" in md

    status = read_json(folder / c.STATUS)
    assert (status["session_id"], status["status"], status["terminal"], status["status_reason"]) == (
        row.id, "success", True, "completed")
    started, finished = iso(status["started_at"]), iso(status["finished_at"])
    assert started <= finished
    assert status["duration_seconds"] == pytest.approx((finished - started).total_seconds(), abs=0.002)
    assert iso(status["updated_at"]) == finished
    assert status["error_type"] is None and status["error_message"] is None

    report = read_json(folder / c.REPORT)
    assert report["machine_contract"] == {"contract_type": "quantlab.paper.result", "schema_version": "1.0",
                                          "request_id": ""}
    assert (report["session_id"], report["status"], report["terminal"]) == (row.id, "success", True)
    assert report["artifacts"] == {name: name for name in c.CANONICAL_FILES}

    metrics = read_json(folder / c.METRICS)
    assert metrics["total_pnl"] == row.total_pnl and metrics["num_fills"] == row.num_fills > 0

    # --report prints the run report after the one-line outcome.
    assert out.startswith(f"paper session {row.id}: success (completed)\n")
    assert md in out


# -- 2. trades.csv is paper_fills, row for row -------------------------------------------------

@db_tx
def test_trades_csv_matches_paper_fills_row_for_row(outputs):
    assert run(*RUNBOOK_ARGS, "--paper")[0] == 0
    row = PaperTradingRun.objects.get()
    with open(outputs / "paper_sessions" / row.id / c.TRADES, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == c.TRADES_COLUMNS
        lines = list(reader)
    fills = list(PaperFill.objects.filter(paper_run=row).order_by("fill_id"))

    assert len(lines) == len(fills) == row.num_fills > 0
    for line, fill in zip(lines, fills, strict=True):
        assert (line["fill_id"], line["order_id"], line["symbol"], line["side"], line["liquidity"]) == (
            fill.fill_id, fill.order_id, fill.symbol, fill.side, fill.liquidity)
        assert (float(line["qty"]), float(line["price"]), float(line["fee"])) == (fill.qty, fill.price, fill.fee)
        assert iso(line["filled_at"]) == fill.filled_at
        assert int(line["bar_index"]) == fill.bar_index


# -- 3. research runs and paper sessions stay apart --------------------------------------------

@db_tx
def test_research_run_writes_the_run_registry_not_a_paper_session(outputs):
    code, out, _ = run(*RUNBOOK_ARGS)

    assert code == 0
    run_id = out.split()[2].rstrip(":")
    assert out.startswith(f"research run {run_id}: success")
    runs = outputs / "runs"
    assert sorted(p.name for p in runs.iterdir() if p.is_dir()) == [run_id]
    for name in c.CANONICAL_FILES:
        assert (runs / run_id / name).is_file(), name
    assert read_json(runs / run_id / c.REPORT)["machine_contract"]["contract_type"] == "quantlab.run.result"
    assert [r["run_id"] for r in read_json(runs / c.RUNS_INDEX_JSON)["runs"]] == [run_id]
    with open(runs / c.RUNS_INDEX_CSV, newline="") as fh:
        assert [(r["run_id"], r["status"]) for r in csv.DictReader(fh)] == [(run_id, "success")]
    backtest_id = read_json(runs / run_id / c.METRICS)["backtest_id"]
    assert BacktestRun.objects.filter(pk=backtest_id).exists()
    assert PaperTradingRun.objects.count() == 0
    assert not (outputs / "paper_sessions").exists()


@db_tx
@pytest.mark.parametrize("registry", ["absent", "present"])
def test_paper_run_never_touches_runs_index(outputs, registry):
    runs = outputs / "runs"
    if registry == "present":
        assert run(*RUNBOOK_ARGS)[0] == 0
    before = {name: ((runs / name).read_bytes(), (runs / name).stat().st_mtime_ns)
              for name in (c.RUNS_INDEX_CSV, c.RUNS_INDEX_JSON) if (runs / name).exists()}
    assert len(before) == (2 if registry == "present" else 0)

    assert run(*RUNBOOK_ARGS, "--paper")[0] == 0

    after = {name: ((runs / name).read_bytes(), (runs / name).stat().st_mtime_ns)
             for name in (c.RUNS_INDEX_CSV, c.RUNS_INDEX_JSON) if (runs / name).exists()}
    assert after == before
    assert runs.exists() == (registry == "present")
    assert len(session_dirs(outputs)) == 1


# -- 4. the paper-session index refreshes itself -----------------------------------------------

@db_tx
def test_index_refreshes_after_a_success_and_an_aborted_run(outputs, tight_bot):
    root = outputs / "paper_sessions"
    assert run(*RUNBOOK_ARGS, "--paper")[0] == 0
    first = PaperTradingRun.objects.get().id
    assert index_statuses(root) == ({first: "success"}, {first: "success"})

    code, _, message = run(*RUNBOOK_ARGS, "--paper", "--bot", "tight")

    assert code == 3
    second = PaperTradingRun.objects.exclude(pk=first).get()
    assert second.status == "aborted" and second.status_reason.startswith("risk_halt")
    assert f"paper session {second.id} aborted: risk_halt" in message
    status = read_json(root / second.id / c.STATUS)
    assert (status["status"], status["terminal"]) == ("aborted", True)
    assert status["status_reason"].startswith("risk_halt")
    expected = {first: "success", second.id: "aborted"}
    assert index_statuses(root) == (expected, expected)


# -- 5. the --json-request contract ------------------------------------------------------------

@db_tx
def test_json_request_runs_and_carries_its_request_id(outputs, tmp_path):
    signal_file = tmp_path / "logs" / "quantlab-signals.jsonl"

    code, _, _ = run("--json-request", json.dumps(VALID_REQUEST), "--signal-file", str(signal_file))

    assert code == 0
    row = PaperTradingRun.objects.get()
    assert (row.status, row.mode, row.request_id) == ("success", "replay", "req_paper_001")
    folder = outputs / "paper_sessions" / row.id
    report = read_json(folder / c.REPORT)
    assert report["machine_contract"] == {"contract_type": "quantlab.paper.result", "schema_version": "1.0",
                                          "request_id": "req_paper_001"}
    assert read_json(folder / c.METADATA)["request_id"] == "req_paper_001"
    assert signal_file.is_file()


def request(**changes) -> str:
    """VALID_REQUEST as JSON text with top-level keys changed (None drops a key) or params merged."""
    doc = json.loads(json.dumps(VALID_REQUEST))
    params = changes.pop("params", {})
    doc["params"].update(params)
    for key, value in changes.items():
        if value is None:
            doc.pop(key)
        else:
            doc[key] = value
    return json.dumps(doc)


def params(**values) -> str:
    return request(params=values)


REFUSALS = [
    ("schema_version 2.0", ["--json-request", request(schema_version="2.0")], "unsupported schema_version '2.0'"),
    ("command backtest", ["--json-request", request(command="backtest")], "unknown command 'backtest'"),
    ("unknown param", ["--json-request", params(tickr="BTC-USD")], "params.tickr"),
    ("paper a string", ["--json-request", params(paper="yes")], "params.paper"),
    ("starting_cash a string", ["--json-request", params(starting_cash="100")], "params.starting_cash"),
    ("month 13", ["--json-request", params(start="2022-13-01")], "not a date"),
    ("start after end", ["--json-request", params(start="2023-12-31", end="2022-01-01")], "is after end"),
    ("no request_id", ["--json-request", request(request_id=None)], "request_id"),
    ("malformed JSON", ["--json-request", '{"schema_version": "1.0", "command": '], "not valid JSON"),
    ("not an object", ["--json-request", '["run"]'], "must be a JSON object"),
    ("unknown top-level key", ["--json-request", request(priority="high")], "priority"),
    ("unknown bot", ["--json-request", params(bot="no-such-bot")], "no bot with id or name 'no-such-bot'"),
    ("ticker the bot does not trade", ["--json-request", params(bot="eth-only", ticker="BTC-USD")],
     "'BTC-USD' is not one of bot 'eth-only'"),
    ("ticker the demo bot does not trade", ["--json-request", params(ticker="DOGE-USD")], "the demo bot trades"),
    ("ticker with no data", ["--json-request", params(ticker="DOGE-USD", strategy="sma_crossover",
                                                      data_source="stored")], "no stored bars for DOGE-USD"),
    ("starting_cash NaN", ["--json-request", params(starting_cash=float("nan"))], "params.starting_cash"),
    ("starting_cash negative", ["--json-request", params(starting_cash=-5)], "params.starting_cash"),
    ("json-request plus --ticker", ["--json-request", request(), "--ticker", "BTC-USD"], "not both"),
    ("json-request plus --paper", ["--json-request", request(), "--paper"], "not both"),
]


@db_tx
@pytest.mark.parametrize(("label", "args", "message"), [
    *(pytest.param(*r, id=r[0]) for r in REFUSALS),
    pytest.param(
        "json-request plus --report", ["--json-request", request(), "--report"], "not both",
        id="json-request plus --report",
    ),
])
def test_a_refused_request_exits_2_and_writes_nothing(outputs, tmp_path, label, args, message):
    from bots.services import bot_create

    bot_create(name="eth-only", strategy="sma_crossover", params={"fast": 10, "slow": 30}, symbols=["ETH-USD"])
    signal_file = tmp_path / "logs" / "signals.jsonl"
    if label == "starting_cash NaN":
        assert "NaN" in args[1]  # json.dumps writes the NaN literal Python's json reads back

    code, out, error = run(*args, "--signal-file", str(signal_file))

    assert code == 2, (out, error)
    assert message in error
    assert list(Bot.objects.values_list("name", flat=True)) == ["eth-only"]
    assert (PaperTradingRun.objects.count(), BacktestRun.objects.count(), Bar.objects.count()) == (0, 0, 0)
    assert not outputs.exists()
    assert not signal_file.parent.exists()


def test_a_refused_request_exits_2_from_the_real_command_line(tmp_path):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}", "OUTPUTS_DIR": str(tmp_path / "out")}
    signal_file = tmp_path / "logs" / "signals.jsonl"

    proc = subprocess.run(
        [sys.executable, "manage.py", "run", "--json-request", request(schema_version="2.0"),
         "--signal-file", str(signal_file)],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=60,
    )

    assert proc.returncode == 2, proc.stderr
    assert "unsupported schema_version '2.0'" in proc.stderr
    assert proc.stdout == ""
    assert not (tmp_path / "out").exists() and not signal_file.parent.exists()


@db_tx
def test_the_synthetic_bar_cap_is_one_limit_checked_up_front():
    from pydantic import ValidationError

    from bots.services import MAX_SYNTHETIC_BARS
    from paper import replay

    common = dict(paper=True, ticker="SYN-USD", strategy="sma_crossover", params={"fast": 50, "slow": 200},
                  timeframe="1m", data_source="synthetic", seed=1)
    assert replay.RunParams(**common, bars=MAX_SYNTHETIC_BARS).bars == MAX_SYNTHETIC_BARS
    with pytest.raises(ValidationError):
        replay.RunParams(**common, bars=MAX_SYNTHETIC_BARS + 1)
    code, _, err = run("--paper", "--ticker", "SYN-USD", "--strategy", "sma_crossover", "--timeframe", "1m",
                       "--data-source", "synthetic", "--bars", str(MAX_SYNTHETIC_BARS + 1))
    assert code == 2 and "bars" in err


# -- 6. signal lines -----------------------------------------------------------------------------

@db_tx
def test_signal_lines_are_appended_per_run(outputs, tmp_path, tight_bot):
    signal_file = tmp_path / "logs" / "quantlab-signals.jsonl"
    req = request(request_id="req_sig_1")

    assert run("--json-request", req, "--signal-file", str(signal_file))[0] == 0
    first_run = signal_file.read_bytes()
    assert run(*RUNBOOK_ARGS, "--paper", "--bot", "tight", "--signal-file", str(signal_file))[0] == 3

    text = signal_file.read_text()
    assert text.encode().startswith(first_run)
    events = [json.loads(line) for line in text.splitlines()]
    assert [(e["event"], e["mode"], e["request_id"]) for e in events] == [
        ("started", "run", "req_sig_1"), ("completed", "run", "req_sig_1"),
        ("started", "run", ""), ("aborted", "run", "")]
    ids = list(PaperTradingRun.objects.order_by("started_at").values_list("id", flat=True))
    assert sorted(ids) == [d.name for d in session_dirs(outputs)] and len(ids) == 2
    assert [e["session_id"] for e in events] == [ids[0], ids[0], ids[1], ids[1]]
    for e in events:
        assert e["artifact_dir"] == str(outputs / "paper_sessions" / e["session_id"])
        assert e["paper"] is True
    for end in (events[1], events[3]):
        assert set(end["artifacts"]) == set(c.CANONICAL_FILES)
        assert all(Path(p).is_file() for p in end["artifacts"].values())
    assert events[3]["status_reason"].startswith("risk_halt")


# -- 7. operator commands, without the database ----------------------------------------------------

OPS = {
    "list": lambda root, sid: ["--paper-sessions-list", str(root)],
    "show dir": lambda root, sid: ["--paper-sessions-show", str(root / sid)],
    "show id": lambda root, sid: ["--paper-sessions-show", sid, "--paper-sessions-root", str(root)],
    "health": lambda root, sid: ["--paper-sessions-health", str(root)],
    "alerts": lambda root, sid: ["--paper-sessions-alerts", str(root), "--paper-stale-minutes", "60"],
    "index": lambda root, sid: ["--paper-sessions-index", str(root)],
    "promotion": lambda root, sid: ["--paper-sessions-promotion", str(root)],
}
MISSING_ROOT_OPS = ["list", "show dir", "health", "alerts", "index", "promotion"]


def no_db_env(tmp: Path) -> dict:
    missing = tmp / "no-such-dir" / "db.sqlite3"
    return {**os.environ, "DATABASE_URL": f"sqlite:///{missing}", "OUTPUTS_DIR": str(tmp / "no-outputs")}


def operate(root: Path, show_id: str, tmp: Path) -> dict:
    """{(op, as_json): result} for every op on root, plus {("missing", op): result} on a missing root."""
    keys, argvs = [], []
    for op, argv in OPS.items():
        for as_json in (False, True):
            keys.append((op, as_json))
            argvs.append(argv(root, show_id) + (["--json"] if as_json else []))
    for op in MISSING_ROOT_OPS:
        keys.append(("missing", op))
        argvs.append(OPS[op](tmp / "no-such-root", "nope"))
    results = manage_py_many([["run", *argv] for argv in argvs], env=no_db_env(tmp))
    assert not (tmp / "no-such-dir").exists()
    return dict(zip(keys, results, strict=True))


@dataclasses.dataclass
class Expect:
    ids: list[str]
    counts: dict[str, int]
    alerts: dict[str, str]  # session_id -> code
    show: str
    show_status: str
    ready: list[str]


def check_op(op: str, as_json: bool, result: dict, root: Path, expect: Expect) -> None:
    assert result["code"] == 0, result["stderr"]
    out = result["stdout"]
    doc = json.loads(out) if as_json or op == "alerts" else None  # alerts are JSON by contract
    if op == "list":
        if as_json:
            assert [r["session_id"] for r in doc] == expect.ids
        else:
            assert all(sid in out for sid in expect.ids) and out.startswith("SESSION")
    elif op.startswith("show"):
        if as_json:
            assert (doc["session_id"], doc["status"]) == (expect.show, expect.show_status)
        else:
            assert re.search(rf"^session +{expect.show}$", out, re.M), out
            assert re.search(rf"^status +{expect.show_status}$", out, re.M), out
    elif op == "health":
        if as_json:
            assert doc["total"] == len(expect.ids)
            assert {k: v for k, v in doc["counts"].items() if v} == expect.counts
            assert doc["latest"]["session_id"] == expect.ids[-1]
        else:
            assert f"total {len(expect.ids)}:" in out
    elif op == "alerts":
        assert {a["session_id"]: a["code"] for a in doc["alerts"]} == expect.alerts
        assert doc["stale_minutes"] == 60
    elif op == "index":
        assert (root / c.INDEX_CSV).is_file() and (root / c.INDEX_JSON).is_file()
        if as_json:
            assert doc == {"csv": str(root / c.INDEX_CSV), "json": str(root / c.INDEX_JSON)}
        assert [r["session_id"] for r in read_json(root / c.INDEX_JSON)["sessions"]] == expect.ids
    elif op == "promotion":
        if as_json:
            assert doc["contract"]["min_bars"] == 100 and doc["contract"]["max_drawdown"] == 0.35
            assert [s["session_id"] for s in doc["ready"]] == expect.ready
            assert sorted(s["session_id"] for s in doc["blocked"] + doc["ready"]) == sorted(expect.ids)
        else:
            for words in ("promotion contract:", "min bars", "min trades", "min sharpe", "max drawdown",
                          f"ready ({len(expect.ready)}):", f"blocked ({len(expect.ids) - len(expect.ready)}):"):
                assert words in out


def rebased(specs, now: datetime):
    """The fixture specs moved so their NOW is the real now (the commands read the wall clock)."""
    shift = now - fx.NOW

    def move(t):
        return t + shift if t is not None else None

    return [dataclasses.replace(s, started_at=move(s.started_at), finished_at=move(s.finished_at),
                                updated_at=move(s.updated_at)) for s in specs]


FIXTURE_EXPECT = Expect(
    ids=fx.ORDER,
    counts={"success": 4, "failed": 1, "aborted": 2, "running": 2, "unknown": 1},
    alerts={fx.FAILED: c.ALERT_FAILED, fx.KILLED: c.ALERT_ABORTED, fx.HALTED: c.ALERT_ABORTED,
            fx.STALE: c.ALERT_STALE, fx.CORRUPT: c.ALERT_UNREADABLE},
    show=fx.FAILED, show_status="failed", ready=[fx.GOOD],
)


@pytest.fixture(scope="module")
def fixture_root_ops(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fixture_root")
    root = fx.paper_root_build(tmp / "paper_sessions", specs=rebased(fx.SPECS, datetime.now(UTC)))
    return root, operate(root, fx.FAILED, tmp)


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("op", list(OPS))
def test_operator_commands_on_the_fixture_root(fixture_root_ops, op, as_json):
    root, results = fixture_root_ops

    check_op(op, as_json, results[(op, as_json)], root, FIXTURE_EXPECT)


def test_fixture_root_alerts_carry_the_three_codes_from_the_real_command_line(fixture_root_ops, tmp_path):
    root, _ = fixture_root_ops
    proc = subprocess.run(
        [sys.executable, "manage.py", "run", "--paper-sessions-alerts", str(root), "--paper-stale-minutes", "60"],
        cwd=PROJECT, env=no_db_env(tmp_path), capture_output=True, text=True, timeout=60,
    )

    assert proc.returncode == 0, proc.stderr
    codes = {a["code"] for a in json.loads(proc.stdout)["alerts"]}
    assert {c.ALERT_FAILED, c.ALERT_ABORTED, c.ALERT_STALE} <= codes
    assert fx.FRESH not in proc.stdout  # running, updated a minute ago: not stale


@pytest.mark.parametrize("op", MISSING_ROOT_OPS)
def test_operator_commands_refuse_a_missing_root(fixture_root_ops, op):
    _, results = fixture_root_ops
    result = results[("missing", op)]

    assert result["code"] == 2
    assert "no-such-root" in result["stderr"] and result["stdout"] == ""


@db_tx
def test_operator_commands_on_real_run_output(outputs, tmp_path, tight_bot):
    assert run(*RUNBOOK_ARGS, "--paper")[0] == 0
    assert run(*RUNBOOK_ARGS, "--paper", "--bot", "tight")[0] == 3
    ok = PaperTradingRun.objects.get(status="success").id
    halted = PaperTradingRun.objects.get(status="aborted").id
    root = outputs / "paper_sessions"
    ready = [ok] if read_json(root / ok / c.METRICS)["sharpe"] >= 0.5 else []  # the contract's min sharpe

    results = operate(root, halted, tmp_path)

    expect = Expect(ids=[ok, halted], counts={"success": 1, "aborted": 1}, alerts={halted: c.ALERT_ABORTED},
                    show=halted, show_status="aborted", ready=ready)
    for (op, as_json), result in results.items():
        if op != "missing":
            check_op(op, as_json, result, root, expect)
    assert "risk halt" in json.loads(results[("alerts", True)]["stdout"])["alerts"][0]["message"]
    blocked = {s["session_id"]: s["reasons"] for s in json.loads(results[("promotion", True)]["stdout"])["blocked"]}
    assert "risk halt" in blocked[halted]
