"""Frame-latency benchmark: fill-to-client latency of order.filled frames, N subscribers.

One live session that fills every bar; N WebSocket clients on ws/paper/<id>; latency =
client receive time - the frame's timestamp (set when the fill happens). Services mode.
Usage: .venv/bin/python bench/frames.py [--subscribers 100] [--bars 60] [--pace 60]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.killswitch import pct  # noqa: E402
from bench.stack import Stack, flush_redis, recreate_pg_database  # noqa: E402
from tests.e2e.conftest import Api  # noqa: E402


async def subscriber(url: str, origin: str, token: str, latencies: list[float], done: asyncio.Event) -> int:
    import websockets

    count = 0
    async with websockets.connect(url, origin=origin, additional_headers={"Authorization": f"Bearer {token}"},
                                  max_queue=None) as ws:
        while not done.is_set():
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout=1)
            except TimeoutError:
                continue
            now = time.time()
            frame = json.loads(raw)
            if frame["stage"] == "order.filled":
                latencies.append((now - datetime.fromisoformat(frame["timestamp"]).timestamp()) * 1000)
                count += 1
            if frame["stage"] in ("session.completed", "session.stopped", "session.failed"):
                break
    return count


async def run(stack: Stack, run_id: str, n: int) -> list[float]:
    latencies: list[float] = []
    done = asyncio.Event()
    url = f"{stack.ws_url}/ws/paper/{run_id}"
    tasks = [asyncio.create_task(subscriber(url, stack.url, stack.token, latencies, done)) for _ in range(n)]
    await asyncio.sleep(2)  # all connected before the session starts trading
    return tasks, latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--bars", type=int, default=60)
    parser.add_argument("--pace", type=float, default=60.0)
    parser.add_argument("--database-url", help="a PostgreSQL database to use (default: a scratch one)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/6",
                        help="Redis (the stack's keys go under a prefix of its own, deleted at the end)")
    parser.add_argument("--port", type=int, help="the server's port (default: a free one)")
    args = parser.parse_args()
    db = args.database_url or recreate_pg_database("papertrade_bench_frames")
    redis_url = args.redis_url
    flush_redis(redis_url)
    with tempfile.TemporaryDirectory() as tmp, Stack(mode="services", workdir=Path(tmp), database_url=db, port=args.port,
                                                      redis_url=redis_url, processes=2, threads=8,
                                                      # the bench's own strategy (bench/flipper.py) may be imported
                                                      env={"PAPER_STRATEGY_PACKAGES": "strategies,bench"}) as stack:
        api = Api(stack)
        status, bot = api.call("POST", "/bots", {"name": "flipper", "strategy": "bench.flipper:Flipper",
                                                 "symbols": ["ETH-USD"], "timeframe": "1d"})
        assert status == 201, bot
        status, bt = api.call("POST", f"/bots/{bot['id']}/backtests", {"start": "2022-01-01", "end": "2023-12-31"})
        assert status == 201, bt

        async def go():
            # Subscribers need the run id: start the session paused by a long warm-up? No -
            # start it, connect at once; the backlog replays early frames (excluded below).
            status, started = api.call("POST", f"/bots/{bot['id']}/paper", {
                "starting_cash": 100000, "duration_minutes": args.bars + 3, "pace": args.pace, "seed": 1})
            assert status == 201, started
            run_id = started["paper_run_id"]
            t_connect = time.time()
            tasks, latencies = await run(stack, run_id, args.subscribers)
            counts = await asyncio.gather(*tasks)
            return latencies, counts, t_connect

        cpu0, wall0 = time.process_time(), time.time()
        latencies, counts, _ = asyncio.run(go())
        client_cpu = time.process_time() - cpu0
        client_wall = time.time() - wall0
        # Frames older than the connection come from the stored backlog, not live: drop them
        # (they would measure the time since the fill, not delivery).
        live = [x for x in latencies if x < 2000]
        print(f"frames: 1 session filling every bar, {args.subscribers} subscribers, {sum(counts)} order.filled "
              f"deliveries ({len(live)} live)")
        print(f"frames: the subscribers' own process used {client_cpu:.1f} s CPU in {client_wall:.1f} s")
        print(f"frames: fill-to-client latency p50 {statistics.median(live):.1f} ms, p99 {pct(live, 99):.1f} ms, "
              f"max {max(live):.1f} ms (target p99 < 50 ms)")


if __name__ == "__main__":
    main()
