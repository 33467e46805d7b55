"""Replay benchmark: a 2-year 1-minute replay (1,051,200 synthetic bars) end to end through
`manage.py run --paper`: process start, bars, engine, DB rows, artifacts, index. Wall time.

Usage: .venv/bin/python bench/replay.py [--bars 1051200] [--repeat 3] [--database-url URL]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bars", type=int, default=1_051_200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database-url", default="", help="default: a fresh SQLite file")
    parser.add_argument("--params", default='{"fast":50,"slow":200}')
    args = parser.parse_args()
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "OUTPUTS_DIR": f"{tmp}/outputs",
               "DATABASE_URL": args.database_url or f"sqlite:///{tmp}/replay.sqlite3"}
        env.pop("REDIS_URL", None)
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        cmd = [sys.executable, "manage.py", "run", "--paper", "--ticker", "SYN-USD", "--strategy", "sma_crossover",
               "--params", args.params, "--timeframe", "1m", "--data-source", "synthetic", "--bars",
               str(args.bars), "--seed", "7"]
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            if proc.returncode != 0:
                raise SystemExit(proc.stdout + proc.stderr)
            run_dir = Path(proc.stdout.split("artifacts: ")[1].split()[0])
            metrics = json.loads((run_dir / "metrics.json").read_text())
            print(f"replay {run_dir.name}: {times[-1]:.2f} s wall, {metrics['bars']:,} bars, "
                  f"{metrics['num_fills']:,} fills, status {json.loads((run_dir / 'session_status.json').read_text())['status']}",
                  flush=True)
    db = "PostgreSQL" if args.database_url.startswith("postgres") else "SQLite"
    print(f"replay: {args.bars:,} synthetic 1m bars through `manage.py run --paper` (sma_crossover {args.params}, "
          f"{db}), end to end incl. process start, DB rows and artifacts: best {min(times):.2f} s, "
          f"median {statistics.median(times):.2f} s (target < 5 s)")


if __name__ == "__main__":
    main()
