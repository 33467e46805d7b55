"""Kill-switch benchmark: 50 live sessions on 2 worker processes, fire, time until all are terminal.

Services mode (PostgreSQL + Redis + `rundramatiq --processes 2`), through the HTTP API. Two
figures per trial: the HTTP round trip of `POST /kill-switch`, which answers once every session
is closed in the ledger (terminal: no bar, order or fill of theirs accepted after), and the time
until the last session has woken and written its epilogue (cancelled orders, final metrics and
its goodbye frame, stored with the time it was written).
Usage: .venv/bin/python bench/killswitch.py [--sessions 50] [--trials 7] [--database-url URL]
       [--redis-url URL] [--port PORT]
(default: a scratch PostgreSQL database of its own on 127.0.0.1, dropped at exit, and Redis db 0 on
127.0.0.1 under a key prefix of its own, whose keys are deleted at the end).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import Stack, cpu_seconds, flush_redis, recreate_pg_database  # noqa: E402
from tests.e2e.conftest import Api  # noqa: E402


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    k = max(0, min(len(values) - 1, round(q / 100 * (len(values) - 1))))
    return values[k]


def wait_quiet(pids: list[int], *, below: float = 0.05, window: float = 0.5, timeout: float = 30.0) -> None:
    """Until `pids` used less than `below` of a core over `window` seconds (or `timeout`)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        before = cpu_seconds(pids)
        time.sleep(window)
        if cpu_seconds(pids) - before < below * window:
            return


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--trials", type=int, default=7)
    parser.add_argument("--database-url", help="a PostgreSQL database to use (default: a scratch one)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--port", type=int, help="the server's port (default: a free one)")
    args = parser.parse_args()
    db = args.database_url or recreate_pg_database("papertrade_bench_kill")
    redis_url = args.redis_url
    flush_redis(redis_url)
    with tempfile.TemporaryDirectory() as tmp, Stack(mode="services", workdir=Path(tmp), database_url=db,
                                                      redis_url=redis_url, processes=2, threads=32,
                                                      port=args.port) as stack:
        api = Api(stack)
        wall, reported, epilogue = [], [], []
        for trial in range(args.trials):
            ids = []
            for _ in range(args.sessions):
                status, body = api.call("POST", f"/bots/{stack.demo_bot_id}/paper",
                                        {"starting_cash": 100000, "duration_minutes": 600, "pace": 1})
                assert status == 201, body
                ids.append(body["paper_run_id"])
            deadline = time.time() + 60
            while time.time() < deadline:  # every session is running and waiting for its next bar
                _, page = api.call("GET", f"/paper?status=running&limit={args.sessions * 2}")
                running = {r["id"] for r in page["items"] if r["bars_processed"] >= 1}
                if set(ids) <= running:
                    break
                time.sleep(0.2)
            else:
                raise SystemExit("sessions did not all start")
            t0_wall = time.time()
            t0 = time.perf_counter()
            status, report = api.call("POST", "/kill-switch", {"reason": f"bench trial {trial}"})
            t1 = time.perf_counter()
            assert status == 200, report
            stopped = set(sum((s["stopped"] for s in report["subsystems"]), []))
            _, page = api.call("GET", f"/paper?status=running&limit={args.sessions * 2}")
            assert set(ids) <= stopped and not page["items"], (len(stopped), page["count"])
            wall.append((t1 - t0) * 1000)
            reported.append(report["elapsed_ms"])
            _, page = api.call("GET", f"/paper?limit={args.sessions * 2}&status=aborted")
            from datetime import datetime

            ended = sorted(datetime.fromisoformat(r["ended_at"]).timestamp() for r in page["items"] if r["id"] in ids)
            spread = (ended[-1] - ended[0]) * 1000 if ended else 0
            epilogue.append((goodbyes_written(db, ids) - t0_wall) * 1000)
            print(f"trial {trial + 1}: {args.sessions} sessions terminal in the DB {wall[-1]:.1f} ms "
                  f"(server-side {report['elapsed_ms']:.1f} ms; ended_at spread {spread:.0f} ms); "
                  f"every epilogue written {epilogue[-1]:.1f} ms after the POST", flush=True)
            api.call("POST", "/kill-switch/rearm")
            # Let the stopped sessions' reports, charts and index refreshes (written 1 s after
            # they end) finish, so the next trial starts, like a real incident, from a quiet
            # system: every report on disk, then the workers idle.
            outputs = Path(stack.env["OUTPUTS_DIR"]) / "paper_sessions"
            deadline = time.time() + 120
            while time.time() < deadline and not all((outputs / i / "report.json").exists() for i in ids):
                time.sleep(0.5)
            wait_quiet(stack.worker_pids())
        print(f"kill switch, {args.sessions} live sessions, 2 worker processes x 32 threads, {args.trials} trials: "
              f"p50 {statistics.median(wall):.1f} ms, p99 {pct(wall, 99):.1f} ms, max {max(wall):.1f} ms "
              f"(HTTP round trip until all terminal in the DB; target p99 < 250 ms)")
        print(f"epilogues (every session woken, orders cancelled, metrics and goodbye frame written): "
              f"p50 {statistics.median(epilogue):.1f} ms, p99 {pct(epilogue, 99):.1f} ms, max {max(epilogue):.1f} ms")


def goodbyes_written(db: str, ids: list[str], timeout: float = 30.0) -> float:
    """When the last of these sessions stored its goodbye frame (epoch seconds), once all have."""
    import psycopg

    deadline = time.time() + timeout
    with psycopg.connect(db) as conn:
        while True:
            n, last = conn.execute(
                "SELECT count(*), max(created_at) FROM paper_frames WHERE paper_run_id = ANY(%s) "
                "AND stage = 'session.stopped'", (ids,)).fetchone()
            if n >= len(ids):
                return last.timestamp()
            if time.time() > deadline:
                raise SystemExit(f"only {n} of {len(ids)} sessions wrote their goodbye frame in {timeout:g} s")
            time.sleep(0.05)


if __name__ == "__main__":
    main()
