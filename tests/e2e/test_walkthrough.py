"""The operator walkthrough (seed 000) against a real server and worker, in both modes.

Bot -> gate -> session -> WebSocket frames -> risk halt -> kill switch -> SQL ledger.
"""
from __future__ import annotations

import json
import sqlite3
import time

import pytest
from websockets.sync.client import connect as ws_connect

from tests.seed_sql import SEED_FILLS_SQL, SEED_RUNS_SQL

pytestmark = pytest.mark.e2e



def sql(stack, statement: str) -> list[tuple]:
    url = stack.env["DATABASE_URL"]
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return conn.execute(statement).fetchall()
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(statement).fetchall()


def frames(stack, run_id: str, *, until, timeout: float = 60.0) -> list[dict]:
    """Collect frames from ws/paper/<id> (as the seed's browser console does) until `until(frames)`."""
    got: list[dict] = []
    with ws_connect(f"{stack.ws_url}/ws/paper/{run_id}", origin=stack.url,
                    additional_headers={"Authorization": f"Bearer {stack.token}"}, open_timeout=10) as ws:
        deadline = time.time() + timeout
        while time.time() < deadline and not until(got):
            try:
                got.append(json.loads(ws.recv(timeout=max(0.1, deadline - time.time()))))
            except TimeoutError:
                break
    return got


def wait_status(api, run_id, statuses, timeout=60.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status, run = api.call("GET", f"/paper/{run_id}")
        if run["status"] in statuses:
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} still {run['status']}")


def test_the_seed_walkthrough(stack, api):
    bot_id = stack.demo_bot_id

    # Step 1 - verify the bot is ready.
    status, bot = api.call("GET", f"/bots/{bot_id}")
    assert status == 200
    assert bot["backtest_runs"] and bot["sharpe"] not in (None, 0)

    # Step 2 - start the session: the seed's body, verbatim, with no JSON content type.
    status, started = api.call("POST", f"/bots/{bot_id}/paper", '{"starting_cash":100000,"duration_minutes":60}')
    assert status == 201, started
    verbatim_run = started["paper_run_id"]
    status, _ = api.call("POST", f"/paper/{verbatim_run}/stop")  # a real-time hour: stop it, keep going fast
    assert status == 200

    status, started = api.call("POST", f"/bots/{bot_id}/paper",
                               {"starting_cash": 100000, "duration_minutes": 60, "pace": 60, "seed": 7})
    assert status == 201, started
    run_id = started["paper_run_id"]

    # Step 3 - watch the WebSocket until an order fills.
    got = frames(stack, run_id, until=lambda fs: any(f["stage"] == "order.filled" for f in fs))
    stages = [f["stage"] for f in got]
    assert "session.started" in stages and "bar.received" in stages and "equity.update" in stages
    filled = next(f for f in got if f["stage"] == "order.filled")
    assert {"task_id", "stage", "message", "timestamp"} <= set(filled)
    assert filled["task_id"] == run_id
    assert isinstance(filled["equity"], float) and filled["positions"]

    # Step 4 - the kill switch closes the running session.
    status, report = api.call("POST", "/kill-switch", {"reason": "walkthrough"})
    assert status == 200, report
    assert report["latched"] is True and report["elapsed_ms"] < 1000
    assert run_id in sum((s["stopped"] for s in report["subsystems"]), [])
    status, run = api.call("GET", f"/paper/{run_id}")
    assert run["status"] == "aborted" and run["status_reason"].startswith("kill_switch")
    status, refused = api.call("POST", f"/bots/{bot_id}/paper", {"starting_cash": 100000, "duration_minutes": 60})
    assert status == 423, refused
    status, _ = api.call("POST", "/kill-switch/rearm")
    assert status == 200

    # Step 5 - the ledger, in SQL, verbatim.
    (row,) = sql(stack, SEED_RUNS_SQL)
    assert row[0] == run_id and row[2] == "aborted" and row[3] is not None and row[4] >= 1
    fills = sql(stack, SEED_FILLS_SQL.replace("<from_above>", row[0]))
    assert len(fills) == row[4]
    assert fills[0][1] == "ETH-USD" and fills[0][2] in ("buy", "sell")


def test_a_breached_limit_emits_risk_halted(stack, api):
    status, bot = api.call("POST", "/bots", {
        "name": f"tight-{stack.mode}", "strategy": "buy_and_hold", "symbols": ["ETH-USD"], "timeframe": "1d",
        "risk": {"max_drawdown_pct": 0.5},
    })
    assert status == 201, bot
    status, backtest = api.call("POST", f"/bots/{bot['id']}/backtests", {"start": "2022-01-01", "end": "2023-12-31"})
    assert status == 201, backtest
    status, started = api.call("POST", f"/bots/{bot['id']}/paper",
                               {"starting_cash": 100000, "duration_minutes": 60, "pace": 600, "seed": 3})
    assert status == 201, started
    run_id = started["paper_run_id"]
    got = frames(stack, run_id, until=lambda fs: any(f["stage"].startswith("session.") and f["stage"] != "session.started" for f in fs))
    stages = [f["stage"] for f in got]
    assert "risk.halted" in stages, stages
    halted = next(f for f in got if f["stage"] == "risk.halted")
    assert halted["halt"]["limit"] == "max_drawdown_pct" and "equity" in halted
    run = wait_status(api, run_id, {"aborted"})
    assert run["status_reason"].startswith("risk_halt")


def test_a_late_client_gets_the_stored_frames_first(stack, api):
    status, started = api.call("POST", f"/bots/{stack.demo_bot_id}/paper",
                               {"starting_cash": 50000, "duration_minutes": 20, "pace": 600, "seed": 11})
    assert status == 201
    run_id = started["paper_run_id"]
    wait_status(api, run_id, {"success"})
    got = frames(stack, run_id, until=lambda fs: any(f["stage"] == "session.completed" for f in fs), timeout=10)
    seqs = [f["seq"] for f in got]
    assert seqs == sorted(seqs) and seqs[0] == 1
    assert got[-1]["stage"] == "session.completed"


def test_the_socket_and_api_refuse_anonymous_clients(stack, api):
    status, _ = api.call("GET", "/paper", auth=False)
    assert status == 401
    from websockets.exceptions import ConnectionClosedError

    # Accepted, then an error frame and the close 4401 (not an HTTP 403 a client cannot tell
    # from a foreign origin or an unknown run); daphne passes the code through.
    with ws_connect(f"{stack.ws_url}/ws/paper/x", origin=stack.url, open_timeout=5) as ws:
        refusal = json.loads(ws.recv(timeout=5))
        assert (refusal["stage"], refusal["code"]) == ("error", 4401)
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd.code == 4401
