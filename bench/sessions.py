"""Concurrent-sessions benchmark: N live-paced sessions at once, tick lag p50/p99.

Tick lag = how late a bar was taken versus its schedule (recorded as `lag_ms` on every
bar.received frame). Services mode: PostgreSQL, Redis, 2 worker processes.
Usage: .venv/bin/python bench/sessions.py [--sessions 100] [--bars 60] [--pace 60]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.killswitch import pct  # noqa: E402
from bench.stack import Stack, cpu_seconds, flush_redis, recreate_pg_database  # noqa: E402
from tests.e2e.conftest import Api  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--bars", type=int, default=60)
    parser.add_argument("--pace", type=float, default=60.0, help="60 = one 60-s bar per second")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--database-url", help="a PostgreSQL database to use (default: a scratch one)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/5",
                        help="Redis (the stack's keys go under a prefix of its own, deleted at the end)")
    parser.add_argument("--port", type=int, help="the server's port (default: a free one)")
    args = parser.parse_args()
    threads = -(-args.sessions // args.processes) + 4
    db = args.database_url or recreate_pg_database("papertrade_bench_sessions")
    redis_url = args.redis_url
    flush_redis(redis_url)
    with tempfile.TemporaryDirectory() as tmp, Stack(mode="services", workdir=Path(tmp), database_url=db, port=args.port,
                                                      redis_url=redis_url, processes=args.processes,
                                                      threads=threads) as stack:
        api = Api(stack)
        ids = []
        t_start = time.time()
        for _ in range(args.sessions):
            status, body = api.call("POST", f"/bots/{stack.demo_bot_id}/paper", {
                "starting_cash": 100000, "duration_minutes": args.bars, "pace": args.pace})
            assert status == 201, body
            ids.append(body["paper_run_id"])
        pids = stack.worker_pids()
        cpu0 = cpu_seconds(pids)
        expected = args.bars * 60 / args.pace
        deadline = time.time() + expected * 3 + 60
        while time.time() < deadline:
            _, page = api.call("GET", f"/paper?limit={args.sessions}")
            done = [r for r in page["items"] if r["status"] not in ("queued", "running")]
            if len(done) == args.sessions:
                break
            time.sleep(1)
        wall = time.time() - t_start
        cpu = cpu_seconds(pids) - cpu0
        import psycopg

        with psycopg.connect(db) as conn:
            lags = [r[0] for r in conn.execute(
                "SELECT (payload->>'lag_ms')::float FROM paper_frames WHERE stage = 'bar.received'").fetchall()]
            statuses = conn.execute("SELECT status, count(*) FROM paper_trading_runs GROUP BY status").fetchall()
        print(f"sessions: {args.sessions} concurrent live sessions x {args.bars} bars at one bar per "
              f"{60 / args.pace:g} s; {args.processes} worker processes x {threads} threads; wall {wall:.1f} s "
              f"(schedule {expected:.0f} s); worker CPU {cpu:.1f} s = {cpu / wall * 100:.0f}% of one core")
        print(f"sessions: statuses {dict(statuses)}; {len(lags)} bars")
        print(f"sessions: tick lag p50 {statistics.median(lags):.1f} ms, p99 {pct(lags, 99):.1f} ms, "
              f"max {max(lags):.1f} ms (target p99 < 250 ms)")


if __name__ == "__main__":
    main()
