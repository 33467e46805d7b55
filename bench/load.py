"""API load benchmark: 10,000 paper runs and 1,000,000 fills on PostgreSQL, reads at 100 requests/s.

What it does, in order:
  1. creates a scratch PostgreSQL database (papertrade_bench_load), migrates it, and seeds it with
     COPY: 20 bots, 10,000 terminal paper runs over 120 days (1 in 50 runs holds half the fills:
     200 with 2,500 each; the rest share 500,000) and 1,000,000 fills; then VACUUM ANALYZE;
  2. starts the real stack (bench/stack.py, services mode: `serve --processes 2` (two daphne
     processes on one port) + 2 rundramatiq processes, Redis keys under a
     prefix of its own) and takes the demo operator's API token;
  3. prints the query plans (EXPLAIN ANALYZE) of every SQL statement the list and fills
     endpoints issue, captured in-process, and fails if one reads paper_fills by Seq Scan;
  4. drives the API with locust on loopback for --duration seconds: reads at --read-rate
     requests/s (GET /paper first page, a deep page by offset, a run's fills page at a random
     offset, mostly of runs with 2,500 fills) plus session starts at --start-rate/s
     (POST /bots/{id}/paper, 2-bar sessions at pace 60), and prints count, failures,
     p50/p90/p99/max per endpoint, the load average, the processes' CPU, and the verdict
     against the target (reads p99 < 50 ms at 100 requests/s);
  5. stops only what it started and drops the database it created (--keep keeps it). An existing
     database of that name is never dropped unless --drop-existing says so (or reused with --reuse).

Needs PostgreSQL (user postgres, trust) and Redis on 127.0.0.1, and locust in the venv
(`.venv/bin/pip install locust`; it is a bench tool, not a dependency).
Usage: .venv/bin/python bench/load.py [--duration 60] [--read-rate 100] [--start-rate 2] [--keep]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import (  # noqa: E402
    PG_ADMIN,
    DatabaseExists,
    Stack,
    cpu_seconds,
    descendants,
    drop_pg_database,
    flush_redis,
    keep_pg_database,
    pg_url,
    reset_pg_database,
)

DB_NAME = "papertrade_bench_load"
REDIS_URL = "redis://127.0.0.1:6379/7"
READ_TARGET_P99_MS = 50.0
BOTS = 20


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    values = sorted(values)
    if not values:
        return float("nan")
    k = max(0, min(len(values) - 1, int(-(-q * len(values) // 100)) - 1))
    return values[k]


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def renice(pids: list[int], nice: int) -> None:
    """Set every thread of these processes (Linux nice is per thread) to `nice`."""
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                os.setpriority(os.PRIO_PROCESS, int(task.name), nice)
            except OSError:
                pass


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    return (f"{platform.node()}: {os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {platform.system()} "
            f"{platform.machine()}, Python {platform.python_version()}")


# --- 1. database -----------------------------------------------------------------------------------

def django_setup(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ["REDIS_URL"] = REDIS_URL
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


def _ts(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S.%f+00")


def _copy_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


RUN_COLUMNS = ("id, bot_id, status, status_reason, total_pnl, num_fills, started_at, ended_at, created_at, "
               "updated_at, mode, starting_cash, duration_minutes, symbol, timeframe, data_source, seed, pace, "
               "config_hash, config_snapshot, halt, error_type, error_message, ending_equity, bars_processed, "
               "metrics, request_id, worker_id, stop_requested")
FILL_COLUMNS = "paper_run_id, fill_id, order_id, symbol, side, qty, price, fee, liquidity, bar_index, filled_at"


def seed(*, runs: int, fills: int, rng: random.Random) -> list[tuple[str, int]]:
    """COPY `runs` terminal runs and `fills` fills; returns [(run_id, num_fills)]."""
    from django.db import connection

    from bots.services import bot_create

    bots = []
    for i in range(BOTS):
        fast = 3 + i % 7
        bots.append(bot_create(name=f"load-sma-{i:02d}", strategy="sma_crossover", symbols=["ETH-USD", "BTC-USD"],
                               timeframe="1m" if i % 2 else "1d", params={"fast": fast, "slow": fast * 4 + i},
                               risk={"max_drawdown_pct": 50, "max_position_pct": 100}))
    snapshots = {b.pk: b.trading_config().canonical() for b in bots}
    hashes = {b.pk: b.config_hash for b in bots}

    # Fill counts: 1 run in 50 holds half the fills (200 x 2,500 by default); the others share
    # the other half, skewed (exponential): some have none (stopped early), a few have hundreds.
    heavy = set(rng.sample(range(runs), max(1, runs // 50)))
    heavy_fills = fills // 2 // len(heavy)
    rest = max(fills - heavy_fills * len(heavy), 0)
    weights = [rng.expovariate(1.0) if i not in heavy else 0.0 for i in range(runs)]
    total_w = sum(weights) or 1.0
    counts = [heavy_fills if i in heavy else int(w / total_w * rest) for i, w in enumerate(weights)]
    light = [i for i in range(runs) if i not in heavy]
    for k in range(fills - sum(counts)):
        counts[light[k % len(light)] if light else 0] += 1

    now = datetime.now(UTC).replace(microsecond=0)
    span = timedelta(days=120).total_seconds()
    created = sorted(now - timedelta(seconds=rng.random() * span + 3600) for _ in range(runs))
    statuses = (["success"] * 80 + ["aborted"] * 12 + ["failed"] * 5 + ["aborted"] * 3)
    reasons = {"success": ["completed"], "failed": ["exception: ConnectionError: broker timeout"],
               "aborted": ["operator_stop: stop by operator", "kill_switch: drill", "risk_halt: max_drawdown_pct",
                           "worker_lost: no heartbeat for 300 s"]}
    out: list[tuple[str, int]] = []
    run_lines, fill_block = [], []
    t0 = time.perf_counter()
    with connection.cursor() as cursor:
        raw = cursor.cursor
        for i, created_at in enumerate(created):
            bot = bots[i % BOTS]
            run_id = f"{created_at:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"
            status = rng.choice(statuses)
            n = counts[i]
            duration = rng.choice([30, 60, 60, 240, 1440])
            started_at = created_at + timedelta(milliseconds=rng.randint(5, 400))
            bars = duration if status == "success" else rng.randint(1, duration)
            ended_at = started_at + timedelta(seconds=bars * (60 if bot.timeframe == "1m" else 1))
            cash = rng.choice([10_000.0, 50_000.0, 100_000.0])
            pnl = round(rng.gauss(0, cash * 0.02), 2)
            symbol = rng.choice(["ETH-USD", "BTC-USD"])
            session = {"symbol": symbol, "data_source": "synthetic", "bar_interval_seconds": 60, "poll_seconds": 1,
                       "pace": 60.0, "n_bars": duration, "warmup_bars": 200, "duration_minutes": float(duration)}
            metrics = {"sharpe": round(rng.gauss(0.5, 1), 3), "max_drawdown": round(rng.random() * 0.2, 4),
                       "num_trades": n // 2, "total_return": round(pnl / cash, 5)}
            reason = rng.choice(reasons[status])
            halt = {"rule": "max_drawdown_pct", "limit": 50, "value": 51.2} if reason.startswith("risk_halt") else None
            run_lines.append("\t".join([
                run_id, str(bot.pk), status, reason, str(pnl), str(n), _ts(started_at), _ts(ended_at), _ts(created_at),
                _ts(ended_at), "live" if i % 10 else "replay", str(cash), str(float(duration)), symbol, bot.timeframe,
                "synthetic", str(rng.randrange(2**31)), "60.0", hashes[bot.pk],
                _copy_escape(json.dumps({**snapshots[bot.pk], "session": session})),
                _copy_escape(json.dumps(halt)) if halt else "\\N",
                "ConnectionError" if status == "failed" else "", "broker timeout" if status == "failed" else "",
                str(cash + pnl), str(bars), _copy_escape(json.dumps(metrics)), f"bench-{i}", "", "",
            ]))
            out.append((run_id, n))
            base = started_at.timestamp()
            price = 2000.0 if symbol == "ETH-USD" else 40000.0
            step = max(bars, 1) / max(n, 1)
            for k in range(n):
                price *= 1 + rng.gauss(0, 0.002)
                qty = round(rng.uniform(0.01, 2.0), 4)
                bar = int(k * step)
                filled = datetime.fromtimestamp(base + bar * 60 + k % 60, UTC)
                fill_block.append(f"{run_id}\tf{k + 1:06d}\to{k + 1:06d}\t{symbol}\t{'buy' if k % 2 == 0 else 'sell'}\t"
                                  f"{qty}\t{price:.2f}\t{qty * price * 0.0005:.4f}\t{'taker' if k % 3 else 'maker'}\t"
                                  f"{bar}\t{filled.isoformat(' ')}")
        # Bulk-load the usual way: the fills' plain indexes are dropped during COPY and built
        # after it (from the migrations' own definitions), and the foreign-key triggers are
        # skipped (session_replication_role; the rows reference the runs just copied).
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'paper_fills' AND indexname "
                       "NOT IN (SELECT conname FROM pg_constraint WHERE conrelid = 'paper_fills'::regclass)")
        plain_indexes = cursor.fetchall()
        cursor.execute("SET session_replication_role = replica")
        with raw.copy(f"COPY paper_trading_runs ({RUN_COLUMNS}) FROM STDIN") as copy:
            copy.write("\n".join(run_lines) + "\n")
        t_runs = time.perf_counter()
        for name, _ in plain_indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        with raw.copy(f"COPY paper_fills ({FILL_COLUMNS}) FROM STDIN") as copy:
            for lo in range(0, len(fill_block), 100_000):
                copy.write("\n".join(fill_block[lo:lo + 100_000]) + "\n")
        cursor.execute("SET session_replication_role = DEFAULT")
        cursor.execute("SET maintenance_work_mem = '256MB'")
        for _, indexdef in plain_indexes:
            cursor.execute(indexdef)
        cursor.execute("RESET maintenance_work_mem")
        t_fills = time.perf_counter()
        cursor.execute("VACUUM ANALYZE paper_trading_runs")
        cursor.execute("VACUUM ANALYZE paper_fills")
        cursor.execute("SELECT pg_size_pretty(pg_total_relation_size('paper_fills')), "
                       "pg_size_pretty(pg_total_relation_size('paper_trading_runs'))")
        fills_size, runs_size = cursor.fetchone()
    t_end = time.perf_counter()
    print(f"seeded {runs:,} runs ({runs_size}) and {sum(counts):,} fills ({fills_size}) by COPY in {t_end - t0:.1f} s "
          f"(rows built + runs copied {t_runs - t0:.1f} s, fills copied and indexed {t_fills - t_runs:.1f} s, "
          f"VACUUM ANALYZE {t_end - t_fills:.1f} s)", flush=True)
    return out


# --- 3. query plans ---------------------------------------------------------------------------------

PLAN_WORDS = ("Scan", "Sort", "Limit", "Aggregate", "Join", "Nested Loop")


def explain(*, token: str, runs: list[tuple[str, int]], list_limit: int, fills_limit: int) -> bool:
    """EXPLAIN ANALYZE every paper_* query of each endpoint; True if none reads paper_fills by Seq Scan."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    heavy = max(runs, key=lambda r: r[1])
    light = next((r for r in runs if 10 < r[1] < 200), runs[0])
    cases = [
        ("list, first page", f"/paper?limit={list_limit}"),
        ("list, deep page", f"/paper?limit={list_limit}&offset={len(runs) - list_limit}"),
        ("list, status filter, deep", f"/paper?status=aborted&limit={list_limit}&offset=1000"),
        ("list, bot filter", f"/paper?bot_id=1&limit={list_limit}&offset=200"),
        (f"fills, {heavy[1]:,}-fill run, first page", f"/paper/{heavy[0]}/fills?limit={fills_limit}"),
        (f"fills, {heavy[1]:,}-fill run, last page", f"/paper/{heavy[0]}/fills?limit={fills_limit}&offset={heavy[1] - fills_limit}"),
        (f"fills, {light[1]}-fill run", f"/paper/{light[0]}/fills?limit={fills_limit}"),
    ]
    ok = True
    print("\nquery plans (EXPLAIN ANALYZE of each paper_* statement an endpoint issues; in-process Django, "
          "median of 20 in-process requests):")
    for label, url in cases:
        resp = client.get(url)
        assert resp.status_code == 200, (url, resp.status_code, resp.content[:300])
        elapsed = []
        for _ in range(20):
            t = time.perf_counter()
            client.get(url)
            elapsed.append((time.perf_counter() - t) * 1000)
        with CaptureQueriesContext(connection) as ctx:
            client.get(url)
        body = resp.json()
        print(f"  {label}: GET {url} -> {len(body['items'])} items of {body['count']:,}; "
              f"{len(ctx.captured_queries)} queries; {statistics.median(elapsed):.1f} ms in-process")
        for q in ctx.captured_queries:
            sql = q["sql"]
            if "paper_" not in sql:
                continue
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
                plan = [row[0] for row in cursor.fetchall()]
            short = sql if len(sql) < 150 else sql[:70] + " ... " + sql[-75:]
            print(f"    SQL  {short}")
            for line in plan:
                if any(w in line for w in PLAN_WORDS) or "Execution Time" in line:
                    print(f"         {line.strip()}")
                if "Seq Scan on paper_fills" in line:
                    ok = False
    print("  no Seq Scan on paper_fills" if ok else "  FAIL: a Seq Scan on paper_fills", flush=True)
    return ok


# --- 4. load ----------------------------------------------------------------------------------------

def probe(*, stack: Stack, runs: list[tuple[str, int]], list_limit: int, fills_limit: int, n: int = 60) -> None:
    """Before the load: each read alone over HTTP, one client then 4, to show the server's ceiling."""
    import http.client

    heavy = [r for r in runs if r[1] == max(c for _, c in runs)]
    rng = random.Random(1)
    urls = {
        "list, first page": lambda: f"/paper?limit={list_limit}",
        "list, deep page": lambda: f"/paper?limit={list_limit}&offset={rng.randrange(len(runs) // 2, len(runs) - list_limit)}",
        "fills page": lambda: (lambda r: f"/paper/{r[0]}/fills?limit={fills_limit}&offset={rng.randrange(r[1] - fills_limit)}")(rng.choice(heavy)),
    }
    headers = {"Authorization": f"Bearer {stack.token}"}

    def client(make, count: int, out: list[float]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=30)
        for _ in range(count):
            t = time.perf_counter()
            conn.request("GET", make(), headers=headers)
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200, resp.status
            out.append((time.perf_counter() - t) * 1000)
        conn.close()

    print("\nHTTP, no load: one client, one request at a time (and 4 clients at once, all three reads):")
    for label, make in urls.items():
        out: list[float] = []
        client(make, 5, [])
        t = time.perf_counter()
        client(make, n, out)
        print(f"  {label:18} p50 {pct(out, 50):6.1f} ms, p99 {pct(out, 99):6.1f} ms, {n / (time.perf_counter() - t):5.1f} req/s")
    out = []
    threads = [threading.Thread(target=client, args=(list(urls.values())[i % 3], n, out)) for i in range(4)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    print(f"  4 clients at once  p50 {pct(out, 50):6.1f} ms, p99 {pct(out, 99):6.1f} ms, {len(out) / (time.perf_counter() - t):5.1f} req/s "
          f"(the server's ceiling for these reads)", flush=True)


def run_locust(*, stack: Stack, workdir: Path, runs: list[tuple[str, int]], args) -> dict:
    plan = {
        "token": stack.token, "bot_id": stack.demo_bot_id, "ramp": args.ramp, "read_rate": args.read_rate, "read_users": args.read_users,
        "start_rate": max(args.start_rate, 0.001), "start_users": args.start_users if args.start_rate > 0 else 0,
        "list_limit": args.list_limit, "fills_limit": args.fills_limit, "list_count": len(runs), "runs": runs,
    }
    (workdir / "plan.json").write_text(json.dumps(plan))
    timings = workdir / "timings.json"
    users = args.read_users + plan["start_users"]
    cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "bench" / "locustfile.py"), "--headless",
           "-H", stack.url, "-u", str(users), "-r", str(users), "-t", f"{args.duration + args.ramp + 2}s",
           "--only-summary", "--csv", str(workdir / "locust"), "--stop-timeout", "10", "--exit-code-on-error", "0",
           "--loglevel", "WARNING"]
    env = {**os.environ, "LOAD_PLAN": str(workdir / "plan.json"), "LOAD_TIMINGS": str(timings)}
    for var in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"):
        env.pop(var, None)
    serve_pid = stack.procs[0].pid
    watched = {"daphne": descendants(serve_pid), "workers": [p for proc in stack.procs[1:] for p in descendants(proc.pid)]}
    before = {k: sum(cpu_seconds(p) for p in v) for k, v in watched.items()}
    loads: list[str] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(5):
            loads.append(loadavg())

    sampler = threading.Thread(target=sample, daemon=True)
    print(f"\nlocust: {args.read_users} readers at {args.read_rate:g} req/s in all + {plan['start_users']} starters at "
          f"{args.start_rate:g}/s, {args.ramp} s ramp (not measured) + {args.duration} s measured, nice {args.nice}; "
          f"load average before: {loadavg()}", flush=True)
    with open(workdir / "locust.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    if args.nice:
        renice([proc.pid], args.nice)
    sampler.start()
    locust_cpu = 0.0
    try:
        t0 = time.perf_counter()
        while proc.poll() is None:
            locust_cpu = max(locust_cpu, cpu_seconds(proc.pid))
            time.sleep(0.5)
        wall = time.perf_counter() - t0
    except BaseException:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
        raise
    finally:
        stop.set()
    after = {k: sum(cpu_seconds(p) for p in v) for k, v in watched.items()}
    if not timings.exists():
        raise SystemExit(f"locust wrote no timings; see its log:\n{(workdir / 'locust.log').read_text()[-3000:]}")
    result = json.loads(timings.read_text())
    result["loads"] = loads
    result["cpu"] = {k: (after[k] - before[k]) / wall * 100 for k in watched} | {"locust": locust_cpu / wall * 100}
    return result


def report(result: dict, *, args, stack: Stack) -> bool:
    times, failures = result["times"], result["failures"]
    window = result["window"] or args.duration
    print(f"\nresults ({window:.1f} s measured, after the ramp; times in ms, exact per request):")
    print(f"  {'endpoint':34} {'count':>6} {'req/s':>6} {'fail':>5} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7}")
    reads: list[float] = []
    ok = True
    rows = sorted(times.items(), key=lambda kv: kv[0].startswith("POST"))
    for name, values in rows:
        nfail = sum(failures.get(name, {}).values())
        print(f"  {name:34} {len(values):6d} {len(values) / window:6.1f} {nfail:5d} {pct(values, 50):7.1f} "
              f"{pct(values, 90):7.1f} {pct(values, 99):7.1f} {max(values, default=float('nan')):7.1f}")
        if name.startswith("GET"):
            reads += values
            ok = ok and pct(values, 99) < READ_TARGET_P99_MS and nfail == 0
    nfail_reads = sum(sum(v.values()) for k, v in failures.items() if k.startswith("GET"))
    print(f"  {'all reads':34} {len(reads):6d} {len(reads) / window:6.1f} {nfail_reads:5d} {pct(reads, 50):7.1f} "
          f"{pct(reads, 90):7.1f} {pct(reads, 99):7.1f} {max(reads, default=float('nan')):7.1f}")
    for name, errs in failures.items():
        for err, n in errs.items():
            print(f"  failure {name}: {n} x {err}")
    rate = len(reads) / window
    ok = ok and pct(reads, 99) < READ_TARGET_P99_MS and rate >= 0.95 * args.read_rate
    loads = result["loads"]
    print(f"  load average (1/5/15 min) every 5 s during the run: {', '.join(loads) if loads else '-'}")
    print("  CPU, % of one core: " + ", ".join(f"{k} {v:.0f}%" for k, v in result["cpu"].items()))
    verdict = "PASS" if ok else "FAIL"
    print(f"\nverdict: {verdict}: reads p99 {pct(reads, 99):.1f} ms at {rate:.1f} req/s "
          f"(target p99 < {READ_TARGET_P99_MS:g} ms at {args.read_rate:g} req/s; every read endpoint under it, no failures)")
    if START in times:
        v = times[START]
        print(f"session start: p50 {pct(v, 50):.1f} ms, p99 {pct(v, 99):.1f} ms over {len(v)} starts")
    return ok


START = "POST /bots/{id}/paper"


def sessions_summary(since: datetime, bot_id: int) -> None:
    from django.db.models import Count

    from ledger.models import PaperTradingRun

    deadline = time.time() + 30
    while True:
        by_status = dict(PaperTradingRun.objects.filter(bot_id=bot_id, created_at__gte=since)
                         .values_list("status").annotate(n=Count("id")).order_by())
        if time.time() > deadline or not (by_status.get("queued") or by_status.get("running")):
            break
        time.sleep(1)
    print(f"started sessions by status ({sum(by_status.values())} in all, up to 30 s after the load): {by_status}")


def _seeded(db: str, runs: int) -> bool:
    """Whether `db` exists and holds at least `runs` runs (a --keep run's database)."""
    import psycopg

    try:
        with psycopg.connect(f"{PG_ADMIN.rsplit('/', 1)[0]}/{db}", connect_timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM paper_trading_runs").fetchone()[0] >= runs
    except psycopg.Error:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=60, help="measured seconds (after the ramp)")
    parser.add_argument("--ramp", type=int, default=5, help="seconds of warm-up before measuring")
    parser.add_argument("--read-rate", type=float, default=100.0, help="reads per second, in all")
    parser.add_argument("--read-users", type=int, default=100)
    parser.add_argument("--start-rate", type=float, default=2.0, help="session starts per second (0: none)")
    parser.add_argument("--start-users", type=int, default=4)
    parser.add_argument("--list-limit", type=int, default=50)
    parser.add_argument("--fills-limit", type=int, default=100)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--fills", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=16, help="worker threads per rundramatiq process")
    parser.add_argument("--serve-processes", type=int, default=2,
                        help="daphne processes on the port (`serve --processes`; one per core)")
    parser.add_argument("--db", default=DB_NAME)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--drop-existing", action="store_true",
                        help="drop and recreate --db if it exists (by default the bench refuses to)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse a database a --keep run left (no reseeding); implies --keep")
    parser.add_argument("--nice", type=int, default=0,
                        help="run the stack and locust at this nice value (e.g. -10 on a machine shared with other work)")
    args = parser.parse_args()
    args.keep = args.keep or args.reuse

    print(f"bench/load.py on {machine()}\n{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC, "
          f"commit {subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True, text=True).stdout.strip()}, "
          f"load average {loadavg()}", flush=True)
    reused = args.reuse and _seeded(args.db, args.runs)
    if reused:
        database_url = pg_url(args.db)
    else:
        try:
            database_url = reset_pg_database(args.db, allow_drop=args.drop_existing)
        except DatabaseExists as exc:
            print(f"bench/load.py: {exc}. Pass --drop-existing to drop it, --reuse to reuse a seeded "
                  "database a --keep run left, or --db NEWNAME.", file=sys.stderr)
            return 2
    flush_redis(REDIS_URL)
    stack = None
    try:
        django_setup(database_url)
        from django.core.management import call_command
        from django.db import connection

        t = time.perf_counter()
        call_command("migrate", verbosity=0, interactive=False)
        with connection.cursor() as cursor:
            cursor.execute("SELECT version()")
            print(f"{cursor.fetchone()[0].split(' on ')[0]}; migrated in {time.perf_counter() - t:.1f} s", flush=True)
        if reused:
            from ledger.models import PaperTradingRun

            runs = list(PaperTradingRun.objects.filter(bot__name__startswith="load-").values_list("id", "num_fills"))
            print(f"reusing the seeded database {args.db}: {len(runs):,} runs", flush=True)
        else:
            runs = seed(runs=args.runs, fills=args.fills, rng=random.Random(args.seed))
        workdir = Path(tempfile.mkdtemp(prefix="bench-load-"))
        stack = Stack(mode="services", workdir=workdir, database_url=database_url, redis_url=REDIS_URL,
                      processes=2, threads=args.threads, serve_processes=args.serve_processes)
        stack.start()
        if args.nice:
            renice([p for proc in stack.procs for p in descendants(proc.pid)], args.nice)
        print(f"stack up at {stack.url}: serve pid {stack.procs[0].pid} with {args.serve_processes} daphne "
              f"process(es), 2 rundramatiq processes x {args.threads} "
              f"threads, demo bot {stack.demo_bot_id}; logs in {workdir}", flush=True)
        plans_ok = explain(token=stack.token, runs=runs, list_limit=args.list_limit, fills_limit=args.fills_limit)
        connection.close()
        probe(stack=stack, runs=runs, list_limit=args.list_limit, fills_limit=args.fills_limit)
        since = datetime.now(UTC)
        result = run_locust(stack=stack, workdir=workdir, runs=runs, args=args)
        ok = report(result, args=args, stack=stack)
        sessions_summary(since, stack.demo_bot_id)
        print(f"load average after: {loadavg()}")
        return 0 if ok and plans_ok else 1
    finally:
        if stack is not None:
            stack.stop()
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # noqa: BLE001 - Django may not be set up yet
            pass
        flush_redis(REDIS_URL)
        if args.keep:
            keep_pg_database(args.db)
            print(f"kept database {database_url}")
        elif not reused:  # only the database this run created
            drop_pg_database(args.db)
            print(f"dropped database {args.db}")


if __name__ == "__main__":
    sys.exit(main())
