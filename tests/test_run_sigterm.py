"""SIGTERM to a running `manage.py run --paper`: the session ends aborted, with every file and its row.

A real process on a fresh, migrated SQLite file. The synthetic replay is sized to run for a few
seconds: 1,100,000 1m bars (bots/services.py MAX_SYNTHETIC_BARS, the largest synthetic run).
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from paper import artifact_contract as c

PROJECT = Path(__file__).resolve().parent.parent
BARS = "1100000"
# Bar indexes are absolute (warm-up bars first); a 1m synthetic replay has none, so this is 0.
WARMUP_ALLOWANCE = 0


def _running_status(root: Path) -> Path | None:
    for path in root.glob(f"*/{c.STATUS}"):
        try:
            if json.loads(path.read_text())["status"] == c.RUNNING:
                return path
        except (OSError, ValueError, KeyError):
            continue
    return None


def _replay(env: dict) -> subprocess.Popen:
    """`manage.py run --paper` over the largest synthetic replay, as a real process."""
    return subprocess.Popen(
        [sys.executable, "manage.py", "run", "--paper", "--ticker", "SYN-USD", "--strategy", "sma_crossover",
         "--params", '{"fast":50,"slow":200}', "--timeframe", "1m", "--data-source", "synthetic",
         "--bars", BARS, "--seed", "1"],
        cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait_running(proc: subprocess.Popen, out: Path) -> Path:
    deadline = time.monotonic() + 30
    status_path = None
    while status_path is None and proc.poll() is None and time.monotonic() < deadline:
        status_path = _running_status(out / "paper_sessions")
        time.sleep(0.01)
    assert status_path is not None, f"never saw a running session (exit {proc.poll()})"
    return status_path


def test_sigterm_aborts_a_running_paper_session(tmp_path):
    db, out = tmp_path / "db.sqlite3", tmp_path / "out"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{db}", "OUTPUTS_DIR": str(out)}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=PROJECT, env=env, check=True, timeout=120)
    proc = _replay(env)
    try:
        status_path = _wait_running(proc, out)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    session_id = status_path.parent.name
    assert proc.returncode == 3, (stdout, stderr)
    assert f"paper session {session_id}: aborted (sigterm" in stdout
    assert f"paper session {session_id} aborted: sigterm" in stderr

    status = json.loads(status_path.read_text())
    assert (status["status"], status["terminal"]) == ("aborted", True)
    assert status["status_reason"].startswith("sigterm")
    assert status["finished_at"] and status["duration_seconds"] is not None
    assert status["bars_processed"] < status["bars_total"] == int(BARS)
    for name in c.CANONICAL_FILES:
        assert (status_path.parent / name).is_file(), name
    report = json.loads((status_path.parent / c.REPORT).read_text())
    assert (report["status"], report["terminal"]) == ("aborted", True)

    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT status, status_reason, total_pnl, mode FROM paper_trading_runs WHERE id = ?",
                           (session_id,)).fetchone()
    assert row is not None
    assert (row[0], row[3]) == ("aborted", "replay") and row[1].startswith("sigterm") and row[2] is not None

    index = json.loads((out / "paper_sessions" / c.INDEX_JSON).read_text())
    assert [(s["session_id"], s["status"]) for s in index["sessions"]] == [(session_id, "aborted")]


def test_the_kill_switch_from_another_process_aborts_a_replay(tmp_path):
    """No Redis: the stop reaches the replay through the DB flag its heartbeat reads."""
    db, out = tmp_path / "db.sqlite3", tmp_path / "out"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{db}", "OUTPUTS_DIR": str(out)}
    env.pop("REDIS_URL", None)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=PROJECT, env=env, check=True, timeout=120)
    # The firing process starts first (Django start-up takes longer than a replay's first bars)
    # and fires the moment the trigger file appears.
    trigger = tmp_path / "fire-now"
    script = (
        "import json, os, time\n"
        "from risk.services import kill_switch_fire\n"
        f"while not os.path.exists({str(trigger)!r}):\n"
        "    time.sleep(0.005)\n"
        "report = kill_switch_fire(reason='drill')\n"
        "from ledger.models import PaperFill, PaperTradingRun\n"
        "[run] = PaperTradingRun.objects.all()\n"
        "report['at_answer'] = {'fills': PaperFill.objects.filter(paper_run=run).count(),\n"
        "                       'ended_at': run.ended_at.isoformat(), 'bars': run.bars_processed}\n"
        "print(json.dumps(report))\n"
    )
    firing = subprocess.Popen([sys.executable, "manage.py", "shell", "-c", script], cwd=PROJECT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.0)  # let it load Django and wait
    proc = _replay(env)
    try:
        status_path = _wait_running(proc, out)
        trigger.touch()
        fire_out, fire_err = firing.communicate(timeout=60)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        for p in (proc, firing):
            if p.poll() is None:
                p.kill()
                p.communicate()

    class fire:  # noqa: N801 - shaped like subprocess.run's result
        returncode, stdout, stderr = firing.returncode, fire_out, fire_err

    assert fire.returncode == 0, fire.stderr
    report = json.loads(fire.stdout.strip().splitlines()[-1])
    session_id = status_path.parent.name
    assert session_id in sum((s["stopped"] for s in report["subsystems"]), [])
    assert proc.returncode == 3, (stdout, stderr, fire.stdout[-2000:], fire.stderr[-2000:])
    status = json.loads(status_path.read_text())
    # The stop closed the row; the replay heard it (exit 3, above) and its folder says so too.
    assert status["status"] == "aborted" and status["status_reason"] == "kill_switch: drill"
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT status, status_reason FROM paper_trading_runs WHERE id = ?", (session_id,)).fetchone()
    assert row == ("aborted", "kill_switch: drill")
    # No fill, bar or end time of the replay is accepted after the switch answered (issue 13,
    # finding 7: 17,443 fills were inserted after it, and ended_at was overwritten).
    at_answer = report["at_answer"]
    with sqlite3.connect(db) as conn:
        fills = conn.execute("SELECT count(*), max(bar_index) FROM paper_fills WHERE paper_run_id = ?",
                             (session_id,)).fetchone()
        bars, ended_at, metrics = conn.execute(
            "SELECT bars_processed, ended_at, metrics FROM paper_trading_runs WHERE id = ?", (session_id,)).fetchone()
        last_point = conn.execute("SELECT max(bar_index) FROM paper_equity_points WHERE paper_run_id = ?",
                                  (session_id,)).fetchone()[0]
    assert fills[0] == at_answer["fills"] and bars == at_answer["bars"] < int(BARS)
    assert datetime.fromisoformat(ended_at.replace(" ", "T")).replace(tzinfo=UTC) == \
        datetime.fromisoformat(at_answer["ended_at"])
    assert fills[1] is None or fills[1] < bars + WARMUP_ALLOWANCE
    assert json.loads(metrics)["total_return"] is not None  # its epilogue: metrics of the ledger's bars
    assert last_point is None or last_point < bars + WARMUP_ALLOWANCE
