"""Injected faults against real processes: the sessions resume or end aborted with a reason, no
fill is lost or duplicated, the ledger invariants hold, the API says 503 with a reason while a
dependency is down, and the alerts show what happened.

- SIGKILL a worker process mid-session (two `rundramatiq` supervisors, like two hosts);
- stop Redis for 10 s mid-session (a private redis-server: its queues are lost too);
- restart PostgreSQL mid-session, down for a few seconds (a private cluster);
- SIGKILL daphne with sockets open, then start it again;
- SIGKILL one of two daphne processes (`serve --processes 2`) with sockets open;
- embedded mode: SIGKILL the one process mid-session, then start it again.

The services-mode cases run in CI's PostgreSQL + Redis pass; the embedded case in the SQLite pass.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import psycopg
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from bench.stack import Stack, flush_redis, recreate_pg_database
from tests.e2e import services
from tests.e2e.conftest import SERVICES_ENV, Api, services_available, services_enabled

pytestmark = pytest.mark.e2e

# Services mode is explicit (PAPERTRADE_TEST_SERVICES=1, which CI's PostgreSQL + Redis pass sets).
SERVICES_PASS = services_enabled()
needs_services = pytest.mark.skipif(
    not SERVICES_PASS, reason=f"services mode is off: set {SERVICES_ENV}=1 (PostgreSQL and Redis on 127.0.0.1)")

# Faster supervision than production so the tests take seconds, not minutes.
FAST = {"PAPER_RECONCILE_SECONDS": "1", "PAPER_RESUME_AFTER_SECONDS": "5", "PAPER_ARTIFACTS_DELAY_MS": "0"}
# A 60-minute session is 60 bars (one per PAPER_BAR_INTERVAL_SECONDS=60); at pace 120, a bar every 0.5 s.
SESSION = {"starting_cash": 100_000, "duration_minutes": 60, "pace": 120}


# --- helpers ----------------------------------------------------------------------------------------

def busy_bot(api: Api, name: str) -> int:
    """A bot that trades often (SMA 2/5), with the fresh backtest the gate asks for."""
    status, bot = api.call("POST", "/bots", {"name": name, "strategy": "sma_crossover", "params": {"fast": 2, "slow": 5},
                                             "symbols": ["ETH-USD"], "timeframe": "1d", "risk": {"max_drawdown_pct": 95}})
    assert status == 201, bot
    status, backtest = api.call("POST", f"/bots/{bot['id']}/backtests", {"start": "2022-01-01", "end": "2023-12-31"})
    assert status == 201, backtest
    return bot["id"]


def start_sessions(api: Api, bot_id: int, seeds: list[int], **extra) -> list[str]:
    ids = []
    for seed in seeds:
        status, started = api.call("POST", f"/bots/{bot_id}/paper", {**SESSION, "seed": seed, **extra})
        assert status == 201, started
        ids.append(started["paper_run_id"])
    return ids


def rows(db_url: str, sql: str, *params) -> list[tuple]:
    with psycopg.connect(db_url, connect_timeout=5) as conn:
        return conn.execute(sql, params).fetchall()


def wait_until(check, timeout: float, what: str, every: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def progress(db_url: str, ids: list[str]) -> dict[str, tuple]:
    got = rows(db_url, "SELECT id, status, bars_processed, worker_id FROM paper_trading_runs WHERE id = ANY(%s)", ids)
    return {r[0]: r[1:] for r in got}


def wait_running(db_url: str, ids: list[str], bars: int = 3, timeout: float = 60) -> dict[str, tuple]:
    def ready():
        now = progress(db_url, ids)
        ok = len(now) == len(ids) and all(s == "running" and b >= bars for s, b, _ in now.values())
        return now if ok else None

    return wait_until(ready, timeout, f"{ids} running")


def wait_terminal(db_url: str, ids: list[str], timeout: float = 120) -> dict[str, tuple]:
    def done():
        now = progress(db_url, ids)
        return now if all(s in ("success", "aborted", "failed") for s, _, _ in now.values()) else None

    return wait_until(done, timeout, f"{ids} terminal", every=0.5)


def reference_fills(run: dict) -> list[tuple]:
    """The fills of the same session run straight through the engine (no Django, no faults)."""
    from paper.engine.bars import timeframe_seconds
    from paper.engine.botconfig import BotConfig
    from paper.engine.synthetic import synthetic_bars

    snap = run["config_snapshot"]
    config = BotConfig.validate(**{k: snap[k] for k in ("strategy", "params", "symbols", "timeframe", "risk", "execution")})
    plan = snap["session"]
    n, w, tf = plan["n_bars"], plan["warmup_bars"], timeframe_seconds(run["timeframe"])
    bars = synthetic_bars(run["symbol"], run["timeframe"], w + n, seed=run["seed"], start_ts=plan["start_ts"] - w * tf)
    engine = config.build_engine(starting_cash=run["starting_cash"], seed=run["seed"], symbol=run["symbol"])
    engine.warmup(bars.slice(0, w))
    result = engine.run(bars.slice(w))
    return [(f.fill_id, f.qty, f.price, f.bar_index) for f in result.fills]


def check_ledger(db_url: str, run_id: str) -> dict:
    """The ledger invariants, and the fills equal to an uninterrupted run's (a prefix if aborted)."""
    with psycopg.connect(db_url) as conn:
        conn.row_factory = psycopg.rows.dict_row
        run = conn.execute("SELECT * FROM paper_trading_runs WHERE id = %s", (run_id,)).fetchone()
        fills = conn.execute("SELECT fill_id, qty, price, bar_index FROM paper_fills WHERE paper_run_id = %s "
                             "ORDER BY fill_id", (run_id,)).fetchall()
        seqs = [r["seq"] for r in conn.execute("SELECT seq FROM paper_frames WHERE paper_run_id = %s ORDER BY seq",
                                               (run_id,)).fetchall()]
        stages = [r["stage"] for r in conn.execute("SELECT stage FROM paper_frames WHERE paper_run_id = %s ORDER BY seq",
                                                   (run_id,)).fetchall()]
        points = conn.execute("SELECT bar_index, equity FROM paper_equity_points WHERE paper_run_id = %s "
                              "ORDER BY bar_index", (run_id,)).fetchall()
        filled_frames = conn.execute("SELECT count(*) AS n FROM paper_frames WHERE paper_run_id = %s "
                                     "AND stage = 'order.filled'", (run_id,)).fetchone()["n"]
        open_orders = conn.execute("SELECT order_id, status FROM paper_orders WHERE paper_run_id = %s AND status "
                                   "IN ('new', 'accepted', 'partially_filled')", (run_id,)).fetchall()
    assert run["status"] in ("success", "aborted"), (run["status"], run["status_reason"])
    assert run["status_reason"], "a terminal run says why"
    got = [(f["fill_id"], f["qty"], f["price"], f["bar_index"]) for f in fills]
    warmup = run["config_snapshot"]["session"]["warmup_bars"]  # bar indexes count the warm-up bars
    want = [f for f in reference_fills(run) if f[3] < warmup + run["bars_processed"]]
    assert got == want, f"{run_id}: ledger fills differ from an uninterrupted run's"
    assert run["num_fills"] == len(got) == filled_frames
    if run["status"] == "success":
        assert run["bars_processed"] == run["config_snapshot"]["session"]["n_bars"]
    assert seqs == list(range(1, len(seqs) + 1)), "frame seqs have a gap or a duplicate"
    assert [p["bar_index"] - warmup for p in points] == list(range(run["bars_processed"]))
    assert points[-1]["equity"] == pytest.approx(run["ending_equity"])
    assert run["total_pnl"] == pytest.approx(run["ending_equity"] - run["starting_cash"])
    # Its epilogue, by its session or (no worker ran it) by the reconciler from the ledger. (A
    # session that completes leaves the order its last bar sent working: see the README.)
    if run["status"] == "aborted":
        assert open_orders == [], f"{run_id}: an aborted run has working orders"
    assert run["metrics"].get("bars") == run["bars_processed"], (run["metrics"], run["bars_processed"])
    return {"run": run, "stages": stages, "fills": len(got)}


def json_get(api: Api, path: str, timeout: float = 30) -> tuple[int, dict, str]:
    """A GET that keeps the raw body too (to show no traceback leaks)."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(api.base + path, headers={"Authorization": f"Bearer {api.token}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read().decode()
            return resp.status, json.loads(raw), raw
    except urllib.error.HTTPError as exc:
        raw = exc.read().decode()
        return exc.code, json.loads(raw), raw


def alerts_for(api: Api, run_id: str) -> list[dict]:
    status, body = api.call("GET", "/paper/alerts")
    assert status == 200, body
    return [a for a in body["alerts"] if a["session_id"] == run_id]


@pytest.fixture
def services_stack(tmp_path):
    made: list[Stack] = []

    def make(name: str, *, database_url: str | None = None, redis_url: str | None = None, env=None,
             serve_processes: int = 1) -> Stack:
        if not services_available():
            pytest.skip("PostgreSQL and Redis on 127.0.0.1 are needed")
        database_url = database_url or recreate_pg_database(f"papertrade_faults_{name}")
        if redis_url is None:
            redis_url = "redis://127.0.0.1:6379/8"
            flush_redis(redis_url)
        stack = Stack(mode="services", workdir=tmp_path / name, database_url=database_url, redis_url=redis_url,
                      processes=1, threads=8, env={**FAST, **(env or {})}, serve_processes=serve_processes)
        made.append(stack)
        return stack.start()

    yield make
    for stack in made:
        stack.stop()


@pytest.fixture
def private_services():
    why = services.available()
    if why:
        pytest.skip(why)
    made = []

    def make(kind):
        server = services.PrivatePostgres() if kind == "postgres" else services.PrivateRedis()
        made.append(server)
        return server

    yield make
    for server in made:
        server.destroy()


# --- SIGKILL a worker -------------------------------------------------------------------------------

@needs_services
def test_sigkill_a_worker_mid_session(services_stack):
    stack = services_stack("kill")
    second = stack.add_worker(processes=1, log_name="worker-b.log")  # another worker host
    api, db = Api(stack), stack.env["DATABASE_URL"]
    ids = start_sessions(api, busy_bot(api, "kill"), seeds=[1, 2, 3, 4])
    running = wait_running(db, ids)
    # The worker process holding the most sessions dies without a word (OOM killer, kill -9).
    by_pid: dict[int, list[str]] = {}
    for run_id, (_, _, worker_id) in running.items():
        by_pid.setdefault(int(worker_id.split(":")[1]), []).append(run_id)
    victim, held = max(by_pid.items(), key=lambda item: len(item[1]))
    supervisors = [p for p in stack.procs if p.pid in {stack.procs[1].pid, second.pid}]
    owner = next(s for s in supervisors if victim in stack.worker_pids(s))
    os.kill(victim, signal.SIGKILL)
    owner.wait(30)  # dramatiq's supervisor stops the rest of that host's workers and exits
    survivor = next(s for s in supervisors if s is not owner)
    assert survivor.poll() is None

    final = wait_terminal(db, ids)
    assert {s for s, _, _ in final.values()} == {"success"}, final
    for run_id in ids:
        checked = check_ledger(db, run_id)
        if run_id in held:
            stages = checked["stages"]
            assert stages.index("session.worker_lost") < stages.index("session.resumed"), stages
            assert checked["run"]["worker_id"].split(":")[1] != str(victim)
            assert [a["code"] for a in alerts_for(api, run_id)] == ["PAPER_SESSION_INCIDENT"]


@needs_services
def test_a_deploy_restart_hands_sessions_over_at_once(services_stack):
    """SIGTERM (a deploy) does not wait hours for sessions: they move to another worker now."""
    stack = services_stack("handoff")
    second = stack.add_worker(processes=1, log_name="worker-b.log")
    api, db = Api(stack), stack.env["DATABASE_URL"]
    ids = start_sessions(api, busy_bot(api, "handoff"), seeds=[41, 42, 43])
    running = wait_running(db, ids)
    supervisors = [stack.procs[1], second]
    pids = {s.pid: set(stack.worker_pids(s)) for s in supervisors}
    holders = {int(w.split(":")[1]) for _, _, w in running.values()}
    leaving = next(s for s in supervisors if pids[s.pid] & holders)
    t0 = time.time()
    os.kill(leaving.pid, signal.SIGTERM)
    leaving.wait(20)
    assert time.time() - t0 < 10, "the worker waited for its sessions instead of handing them over"

    final = wait_terminal(db, ids)
    assert {s for s, _, _ in final.values()} == {"success"}, final
    moved = 0
    for run_id in ids:
        stages = check_ledger(db, run_id)["stages"]
        assert "session.worker_lost" not in stages  # handed over, not lost
        if "session.handoff" in stages:
            moved += 1
            assert stages.index("session.handoff") < stages.index("session.resumed")
    assert moved >= 1


# --- Redis down for 10 s ----------------------------------------------------------------------------

@needs_services
def test_stop_redis_for_10_seconds_mid_session(services_stack, private_services):
    redis_server = private_services("redis").start()
    stack = services_stack("redis", redis_url=redis_server.url)
    api, db = Api(stack), stack.env["DATABASE_URL"]
    bot_id = busy_bot(api, "redis")
    ids = start_sessions(api, bot_id, seeds=[5, 6, 7])
    wait_running(db, ids)
    watcher = FrameWatcher(stack, ids[0]).start()
    wait_until(lambda: len(watcher.seqs) > 2, 30, "live frames before the outage")

    redis_server.stop()
    down_at = time.time()
    # A socket that opens while Redis is down is accepted and follows the ledger.
    late = FrameWatcher(stack, ids[1]).start()
    wait_until(lambda: len(late.seqs) > 0, 10, "the backlog on a socket opened while Redis is down")
    seen = len(late.seqs)
    status, refused = api.call("POST", f"/bots/{bot_id}/paper", {**SESSION, "seed": 8})
    assert status == 503 and refused["code"] == "broker_unavailable", refused
    assert "retry" in refused["detail"]
    before = progress(db, ids)
    status, listing = api.call("GET", "/paper?limit=5")
    assert status == 200, listing  # reads need only the database
    status, switch = api.call("GET", "/kill-switch")
    assert status == 200
    time.sleep(max(0.0, 10 - (time.time() - down_at)))
    during = progress(db, ids)
    assert all(during[r][1] > before[r][1] for r in ids), "sessions keep trading while Redis is down"
    assert len(late.seqs) > seen, "the late socket got new frames from the ledger during the outage"
    redis_server.start()

    final = wait_terminal(db, ids)
    assert {s for s, _, _ in final.values()} == {"success"}, final
    for run_id in ids:
        check_ledger(db, run_id)
    # The broker works again: a new session runs to its end.
    status, started = api.call("POST", f"/bots/{bot_id}/paper", {**SESSION, "duration_minutes": 5, "seed": 9})
    assert status == 201, started
    wait_terminal(db, [started["paper_run_id"]], timeout=60)
    check_ledger(db, started["paper_run_id"])
    # The refused start is on record, aborted with its reason (and alerted), not left queued.
    refused_run = refused["errors"]["run_id"]
    assert progress(db, [refused_run])[refused_run][0] == "aborted"
    # The socket client saw every frame, in order, across the outage (reconnecting if it had to).
    for client, run_id in ((watcher, ids[0]), (late, ids[1])):
        client.join(60)
        stored = rows(db, "SELECT seq FROM paper_frames WHERE paper_run_id = %s ORDER BY seq", run_id)
        assert client.refused == [], "no socket is refused while Redis is down"
        assert client.seqs == [q for (q,) in stored if q >= client.seqs[0]], "every frame once, in order"
        assert client.stages[-1] == "session.completed"


# --- PostgreSQL restarted ---------------------------------------------------------------------------

@needs_services
def test_restart_postgresql_mid_session(services_stack, private_services):
    pg = private_services("postgres").init()
    db = pg.create_database("papertrade")
    # Sessions wait out the outage themselves; the reconciler must not move them meanwhile.
    stack = services_stack("postgres", database_url=db, env={"PAPER_RESUME_AFTER_SECONDS": "30"})
    api = Api(stack)
    bot_id = busy_bot(api, "postgres")
    ids = start_sessions(api, bot_id, seeds=[11, 12, 13])
    wait_running(db, ids)

    pg.stop()
    down_at = time.time()
    status, body, raw = json_get(api, "/paper?limit=5")
    assert status == 503 and body["code"] == "database_unavailable", body
    assert "retry" in body["detail"] and "Traceback" not in raw
    status, body = api.call("POST", f"/bots/{bot_id}/paper", {**SESSION, "seed": 14})
    assert status == 503 and body["code"] == "database_unavailable", body
    time.sleep(max(0.0, 5 - (time.time() - down_at)))
    pg.start()

    final = wait_terminal(db, ids)
    assert {s for s, _, _ in final.values()} == {"success"}, final
    recovered = 0
    for run_id in ids:
        checked = check_ledger(db, run_id)
        recovered += "session.recovered" in checked["stages"]
        assert checked["stages"].count("session.worker_lost") == 0  # nobody was moved
    assert recovered >= 1, "at least one session waited out the outage and said so"
    status, listing = api.call("GET", "/paper?limit=5")
    assert status == 200
    assert any(a["code"] == "PAPER_SESSION_INCIDENT" for r in ids for a in alerts_for(api, r))


# --- daphne killed with sockets open ----------------------------------------------------------------

class FrameWatcher(threading.Thread):
    """A socket client that reconnects with ?after_seq= like the dashboard, until the session ends."""

    def __init__(self, stack: Stack, run_id: str, timeout: float = 120):
        super().__init__(daemon=True)
        self.stack, self.run_id, self.timeout = stack, run_id, timeout
        self.seqs: list[int] = []
        self.stages: list[str] = []
        self.disconnects = 0
        # Refusals: HTTP statuses of refused handshakes (a 500 is a server bug), and close codes of
        # sockets accepted then refused (their error frame, e.g. 4404; paper/consumers.py).
        self.refused: list[int] = []

    def start(self) -> FrameWatcher:
        super().start()
        return self

    def run(self) -> None:
        deadline = time.time() + self.timeout
        while time.time() < deadline:
            after = self.seqs[-1] if self.seqs else 0
            try:
                with ws_connect(f"{self.stack.ws_url}/ws/paper/{self.run_id}?after_seq={after}",
                                additional_headers={"Authorization": f"Bearer {self.stack.token}"},
                                open_timeout=5) as ws:
                    while time.time() < deadline:
                        frame = json.loads(ws.recv(timeout=max(0.1, deadline - time.time())))
                        if frame["stage"] == "error" and "code" in frame:
                            self.refused.append(frame["code"])
                            time.sleep(0.2)
                            break
                        self.seqs.append(frame["seq"])
                        self.stages.append(frame["stage"])
                        if frame["stage"] in ("session.completed", "session.stopped", "session.failed"):
                            return
            except InvalidStatus as exc:
                self.refused.append(exc.response.status_code)
                time.sleep(0.2)
            except (ConnectionClosed, OSError, TimeoutError):
                self.disconnects += 1
                time.sleep(0.2)


@needs_services
def test_kill_daphne_with_sockets_open(services_stack):
    stack = services_stack("daphne")
    api, db = Api(stack), stack.env["DATABASE_URL"]
    (run_id,) = start_sessions(api, busy_bot(api, "daphne"), seeds=[21])
    wait_running(db, [run_id])
    watchers = [FrameWatcher(stack, run_id).start() for _ in range(3)]
    wait_until(lambda: all(len(w.seqs) > 5 for w in watchers), 30, "frames on every socket")

    stack.kill(stack.serve)  # SIGKILL: no close frames, the sockets just drop
    bars = progress(db, [run_id])[run_id][1]
    wait_until(lambda: progress(db, [run_id])[run_id][1] >= bars + 3, 30, "the session to go on without daphne")
    stack.start_serve(log_name="serve-restarted.log")

    wait_terminal(db, [run_id])
    checked = check_ledger(db, run_id)
    stored = rows(db, "SELECT seq FROM paper_frames WHERE paper_run_id = %s ORDER BY seq", run_id)
    for watcher in watchers:
        watcher.join(60)
        assert watcher.disconnects >= 1
        assert watcher.seqs == [s for (s,) in stored], "each client has every frame once, in order"
    assert checked["run"]["status"] == "success"


def established_sockets(pid: int, port: int) -> int:
    """How many established TCP connections to `port` process `pid` holds (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    held = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port, state, inode = int(fields[1].rsplit(":", 1)[1], 16), fields[3], fields[9]
            held += local_port == port and state == "01" and inode in inodes
    return held


def process_gone(pid: int) -> bool:
    """Exited: reaped, or a zombie (its sockets are closed either way)."""
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


@needs_services
def test_kill_one_of_two_daphne_processes_with_sockets_open(services_stack):
    """`serve --processes 2`: two daphne processes on one port. SIGKILL the one holding sockets:
    the other goes on serving, a new one replaces it, and every client ends with every frame once."""
    stack = services_stack("two_daphnes", serve_processes=2)
    api, db = Api(stack), stack.env["DATABASE_URL"]
    first = stack.daphne_pids()
    assert len(first) == 2, first
    (run_id,) = start_sessions(api, busy_bot(api, "two_daphnes"), seeds=[22])
    wait_running(db, [run_id])
    watchers = [FrameWatcher(stack, run_id).start() for _ in range(4)]
    wait_until(lambda: all(len(w.seqs) > 5 for w in watchers), 30, "frames on every socket")
    held = {pid: established_sockets(pid, stack.port) for pid in first}
    victim = max(held, key=held.get)
    assert held[victim] >= 1, held

    os.kill(victim, signal.SIGKILL)
    # A connection that reaches the dying process's own accept queue (SO_REUSEPORT) in the instant
    # it dies is reset, as with any server process that dies, and a client retries. (CI once saw a
    # reset after the killed process was gone too; see the issue 6 note.) The survivor answers.
    wait_until(lambda: process_gone(victim), 10, "the killed daphne to be gone")
    answered, resets = 0, 0
    while answered < 10:
        try:
            status, body = api.call("GET", f"/paper/{run_id}")
        except ConnectionResetError:
            resets += 1
            assert resets <= 3, "the API kept resetting connections after a daphne died"
            time.sleep(0.2)
            continue
        assert status == 200, body
        answered += 1
    wait_until(lambda: len(stack.daphne_pids()) == 2 and victim not in stack.daphne_pids(), 30,
               "a new daphne process in place of the killed one")

    wait_terminal(db, [run_id])
    checked = check_ledger(db, run_id)
    stored = [s for (s,) in rows(db, "SELECT seq FROM paper_frames WHERE paper_run_id = %s ORDER BY seq", run_id)]
    for watcher in watchers:
        watcher.join(60)
        assert watcher.seqs == stored, "each client has every frame once, in order"
    assert sum(w.disconnects for w in watchers) >= held[victim]
    assert checked["run"]["status"] == "success"
    assert "starting another" in (stack.workdir / "serve.log").read_text()


# --- embedded: the one process killed ---------------------------------------------------------------

def test_embedded_sigkill_mid_session_resumes_on_restart(tmp_path):
    stack = Stack(mode="embedded", workdir=tmp_path / "embedded", embedded_threads=4, env=FAST).start()
    try:
        api = Api(stack)
        ids = start_sessions(api, busy_bot(api, "embedded"), seeds=[31, 32])
        db = stack.env["DATABASE_URL"].removeprefix("sqlite:///")
        import sqlite3

        def bars():
            with sqlite3.connect(db) as conn:
                return dict(conn.execute("SELECT id, bars_processed FROM paper_trading_runs WHERE id IN (?, ?)", ids))

        wait_until(lambda: all(b >= 3 for b in bars().values()), 60, "bars")
        stack.kill(stack.serve)
        killed_at = bars()
        stack.start_serve(log_name="serve-restarted.log")
        for run_id in ids:
            wait_until(lambda run_id=run_id: api.call("GET", f"/paper/{run_id}")[1]["status"] == "success", 120,
                       f"{run_id} to finish after the restart")
            status, run = api.call("GET", f"/paper/{run_id}")
            assert run["bars_processed"] == 60 and killed_at[run_id] < 60
            status, page = api.call("GET", f"/paper/{run_id}/fills?limit=1000")
            got = [(f["fill_id"], f["qty"], f["price"]) for f in page["items"]]
            with sqlite3.connect(db) as conn:
                conn.row_factory = sqlite3.Row
                row = dict(conn.execute("SELECT * FROM paper_trading_runs WHERE id = ?", (run_id,)).fetchone())
                stages = [r[0] for r in conn.execute("SELECT stage FROM paper_frames WHERE paper_run_id = ? "
                                                     "ORDER BY seq", (run_id,))]
            row["config_snapshot"] = json.loads(row["config_snapshot"])
            assert got == [f[:3] for f in reference_fills(row)] and got
            assert run["num_fills"] == len(got)
            assert "session.resumed" in stages
    finally:
        stack.stop()
