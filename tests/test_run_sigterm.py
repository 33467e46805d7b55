"""SIGTERM to a running `manage.py run --paper`: the session ends aborted, with every file and its row.

A real process on a fresh, migrated SQLite file. The synthetic replay is sized to run for a few
seconds: 1,100,000 1m bars (bots/services.py MAX_SYNTHETIC_BARS; --bars 2000000 is refused, see
test_run_command.test_the_documented_synthetic_bar_cap_is_accepted).
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from paper import artifact_contract as c

PROJECT = Path(__file__).resolve().parent.parent
BARS = "1100000"


def _running_status(root: Path) -> Path | None:
    for path in root.glob(f"*/{c.STATUS}"):
        try:
            if json.loads(path.read_text())["status"] == c.RUNNING:
                return path
        except (OSError, ValueError, KeyError):
            continue
    return None


def test_sigterm_aborts_a_running_paper_session(tmp_path):
    db, out = tmp_path / "db.sqlite3", tmp_path / "out"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{db}", "OUTPUTS_DIR": str(out)}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=PROJECT, env=env, check=True, timeout=120)
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "run", "--paper", "--ticker", "SYN-USD", "--strategy", "sma_crossover",
         "--params", '{"fast":50,"slow":200}', "--timeframe", "1m", "--data-source", "synthetic",
         "--bars", BARS, "--seed", "1"],
        cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        status_path = None
        while status_path is None and proc.poll() is None and time.monotonic() < deadline:
            status_path = _running_status(out / "paper_sessions")
            time.sleep(0.01)
        assert status_path is not None, f"never saw a running session (exit {proc.poll()})"
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
