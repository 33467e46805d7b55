"""Start and stop the real stack for end-to-end tests and benchmarks.

embedded: one `manage.py serve` process (SQLite, in-process worker). services: `manage.py
serve --worker no` (daphne) plus `manage.py rundramatiq` workers on PostgreSQL and Redis.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def recreate_pg_database(name: str) -> str:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgres://postgres@127.0.0.1:5432/{name}"


def flush_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


def cpu_seconds(pids: int | list[int]) -> float:
    """User + system CPU seconds of these processes so far, all threads (from /proc; gone: 0)."""
    total = 0.0
    for pid in [pids] if isinstance(pids, int) else pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            pass
    return total


def descendants(root: int) -> list[int]:
    """root and every process under it (the rundramatiq supervisor's worker processes)."""
    parent = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += [p for p, pp in parent.items() if pp == pid]
    return found


class Stack:
    def __init__(self, *, mode: str, workdir: Path, database_url: str | None = None, redis_url: str | None = None,
                 processes: int = 2, threads: int = 32, env: dict | None = None, embedded_threads: int = 64,
                 serve_processes: int = 1):
        assert mode in ("embedded", "services")
        self.mode = mode
        self.workdir = Path(workdir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.token = ""
        self.demo_bot_id = 0
        self.env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        self.env.update({
            "PYTHONUNBUFFERED": "1",
            "OUTPUTS_DIR": str(self.workdir / "outputs"),
            "DATABASE_URL": database_url or f"sqlite:///{self.workdir / 'stack.sqlite3'}",
            "EMBEDDED_WORKER_THREADS": str(embedded_threads),
        })
        if mode == "services":
            self.env["REDIS_URL"] = redis_url or "redis://127.0.0.1:6379/3"
        self.env.update(env or {})
        self.processes, self.threads = processes, threads
        self.serve_processes = serve_processes

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen:
        log = open(self.workdir / log_name, "w")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def start(self, timeout: float = 90.0) -> Stack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.start_serve(timeout)
        if self.mode == "services":
            self.add_worker()
        return self

    def start_serve(self, timeout: float = 90.0, *, log_name: str = "serve.log") -> subprocess.Popen:
        """(Re)start the daphne process on this stack's port; waits until it answers."""
        worker = "auto" if self.mode == "embedded" else "no"
        self.serve = self._spawn(["serve", "--port", str(self.port), "--worker", worker,
                                  "--processes", str(self.serve_processes)], log_name)
        deadline = time.time() + timeout
        log = self.workdir / log_name
        while time.time() < deadline:
            text = log.read_text() if log.exists() else ""
            m = re.search(r"TOKEN=(\S+)", text)
            b = re.search(r"demo bot\s+id (\d+)", text)
            if m and b and self._http_up():
                self.token, self.demo_bot_id = m.group(1), int(b.group(1))
                return self.serve
            if self.serve.poll() is not None:
                raise RuntimeError(f"serve exited:\n{text[-3000:]}")
            time.sleep(0.2)
        raise RuntimeError(f"stack did not come up in {timeout} s:\n{log.read_text()[-3000:]}")

    def add_worker(self, *, processes: int | None = None, log_name: str = "worker.log") -> subprocess.Popen:
        """Start a `rundramatiq` supervisor (another one is like another worker host)."""
        # A session holds its message for its whole life: prefetch no more than a process
        # has threads, or sessions wait behind busy threads while another process idles.
        self.env["dramatiq_queue_prefetch"] = str(self.threads)
        return self._spawn(["rundramatiq", "--processes", str(processes or self.processes), "--threads",
                            str(self.threads), "--queues", "paper"], log_name)

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        """Signal a process this stack started (its whole process group) and reap it."""
        os.killpg(proc.pid, sig)
        proc.wait(30)

    def _http_up(self) -> bool:
        try:
            urllib.request.urlopen(self.url + "/openapi.json", timeout=1)
            return True
        except urllib.error.HTTPError:
            return True  # it answered
        except OSError:
            return False

    def daphne_pids(self) -> list[int]:
        """The daphne processes serving the port: `serve` itself, or its children with --processes."""
        pids = descendants(self.serve.pid)
        return pids[1:] if self.serve_processes > 1 else pids[:1]

    def worker_pids(self, supervisor: subprocess.Popen | None = None) -> list[int]:
        """PIDs of the rundramatiq supervisors and their worker processes (from /proc)."""
        supervisors = [supervisor] if supervisor is not None else [p for p in self.procs if p is not self.serve]
        return [pid for proc in supervisors if proc.poll() is None for pid in descendants(proc.pid)]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.time() + 10
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.procs.clear()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
