"""API fuzz: schemathesis over every operation with every check, counting the cases that ran.

Runs tests/test_schemathesis.py (coverage cases plus --examples generated ones per operation,
positive and negative, derandomized) and sums hypothesis's per-operation statistics. A server
error, a schema violation or an undocumented status fails its case; the bench prints the totals.
Usage: .venv/bin/python bench/fuzz.py [--examples 150] [--database-url URL]
(default: SQLite; with --database-url, pytest-django's test database is a scratch one beside it).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=150, help="generated cases per operation")
    parser.add_argument("--database-url", help="PostgreSQL, e.g. postgres://postgres@127.0.0.1:5432/papertrade")
    args = parser.parse_args()
    log = Path(tempfile.mkdtemp()) / "cases.log"
    env = {**os.environ, "SCHEMATHESIS_MAX_EXAMPLES": str(args.examples), "SCHEMATHESIS_CASE_LOG": str(log)}
    env.pop("DATABASE_URL", None)
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_schemathesis.py", "-k", "every_operation_keeps_its_schema",
         "-q", "-p", "no:cacheprovider"],
        cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    out = proc.stdout + proc.stderr
    cases = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    failed = re.findall(r"^FAILED .*", out, flags=re.M)
    summary = next((line for line in reversed(out.splitlines()) if " passed" in line or " failed" in line), "")
    print(f"schemathesis, every check, {args.examples} generated cases per operation"
          f" ({'PostgreSQL' if args.database_url else 'SQLite'}):")
    print(f"  cases run: {len(cases)} over {len(set(cases))} operations; operations with a failing case"
          f" (a server error, a schema violation, an undocumented status): {len(failed)}")
    print(f"  pytest: {summary.strip()}  [{elapsed:.0f} s]")
    if proc.returncode:
        print("\n".join(line for line in out.splitlines() if line.startswith(("FAILED", "E "))[:60]))
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
