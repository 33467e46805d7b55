"""Start and stop the real stack for end-to-end tests and benchmarks.

embedded: one `manage.py serve` process (SQLite, in-process worker). services: `manage.py
serve --worker no` (daphne) plus `manage.py rundramatiq` workers on PostgreSQL and Redis.

On a shared PostgreSQL and Redis a run touches only what it made: scratch databases with
unique names (created, never taken over; dropped only by the process that created them) and
Redis keys under a unique prefix (deleted by key, never a FLUSHDB).
"""
from __future__ import annotations

import atexit
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_SERVER = "postgres://postgres@127.0.0.1:5432"
PG_ADMIN = f"{PG_SERVER}/postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique_name(prefix: str) -> str:
    """`<prefix>_<pid>_<8 hex digits>`: a name no other run (nor another process of this one) picks."""
    return f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"


# --- PostgreSQL: scratch databases of this process's own ------------------------------------------
# A database is dropped only by the process that created it (with CREATE DATABASE, which fails
# rather than take over an existing one). A machine's other databases are never dropped.

class DatabaseExists(RuntimeError):
    pass


_created: dict[str, int] = {}  # database name -> the pid that created it


def pg_url(name: str) -> str:
    return f"{PG_SERVER}/{name}"


def _ident(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
        raise ValueError(f"not a plain PostgreSQL database name: {name!r}")
    return f'"{name}"'


def create_pg_database(name: str) -> str:
    """CREATE DATABASE `name` and return its URL; an existing database raises DatabaseExists."""
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        try:
            conn.execute(f"CREATE DATABASE {_ident(name)}")
        except psycopg.errors.DuplicateDatabase:
            raise DatabaseExists(f"database {name} already exists on {PG_SERVER}; it is not ours to "
                                 "drop or reuse") from None
    _created[name] = os.getpid()
    return pg_url(name)


def drop_pg_database(name: str) -> None:
    """Drop a database this process created (WITH (FORCE): its stack's connections may linger).
    Any other database is refused, whatever its name."""
    if _created.get(name) != os.getpid():
        raise RuntimeError(f"refusing to drop database {name}: this process did not create it")
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")
    del _created[name]


def keep_pg_database(name: str) -> None:
    """This process created `name` but leaves it in place (not dropped at exit)."""
    _created.pop(name, None)


def scratch_pg_database(prefix: str) -> str:
    """A new, empty database named `<prefix>_<pid>_<hex>`, dropped by drop_pg_database(name) or,
    failing that, when this process exits."""
    return create_pg_database(unique_name(prefix))


def reset_pg_database(name: str, *, allow_drop: bool = False) -> str:
    """An empty database called exactly `name` (a user's choice, e.g. a bench's --db). An existing
    one is dropped and created again only with allow_drop; otherwise DatabaseExists says so."""
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists and not allow_drop:
            raise DatabaseExists(f"database {name} already exists on {PG_SERVER}; not dropping a database "
                                 "this run did not create (allow it explicitly, or pick another name)")
        if exists:
            conn.execute(f"DROP DATABASE {_ident(name)} WITH (FORCE)")
    return create_pg_database(name)


def recreate_pg_database(name: str) -> str:
    """Kept for older callers: despite its name it drops nothing. A new scratch database named
    after `name` (scratch_pg_database), dropped when this process exits."""
    return scratch_pg_database(name)


@atexit.register
def _drop_leftovers() -> None:
    for name, pid in list(_created.items()):
        if pid == os.getpid():
            try:
                drop_pg_database(name)
            except Exception as exc:  # noqa: BLE001 - PostgreSQL may be gone by now
                print(f"bench.stack: could not drop scratch database {name}: {exc}", file=sys.stderr)


# --- Redis: keys under a prefix of this run's own --------------------------------------------------
# The app puts every Redis key and pub/sub channel under REDIS_KEY_PREFIX (config/settings.py).
# A stack gets a unique prefix and deletes only the keys under it: no FLUSHDB, no FLUSHALL.

def new_redis_prefix() -> str:
    return unique_name("pt") + ":"


def delete_redis_prefix(url: str, prefix: str) -> int:
    """Delete the keys under `prefix` (SCAN MATCH prefix*) and return how many."""
    import redis

    if not re.fullmatch(r"[A-Za-z0-9_.:-]+", prefix):
        raise ValueError(f"refusing a Redis prefix with glob characters or none at all: {prefix!r}")
    client = redis.Redis.from_url(url, socket_timeout=5)
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=prefix + "*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += client.delete(*batch)
            batch.clear()
    if batch:
        deleted += client.delete(*batch)
    return deleted


def flush_redis(url: str) -> None:
    """Kept for older callers: flushes nothing. A stack's keys live under its own prefix, so there is
    nothing of ours to clear before it starts; this only checks that Redis answers."""
    import redis

    redis.Redis.from_url(url, socket_timeout=5).ping()


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
                 serve_processes: int = 1, redis_prefix: str | None = None, port: int | None = None):
        """In services mode every Redis key the stack's processes make is under `redis_prefix`
        (REDIS_KEY_PREFIX); by default a unique one, whose keys stop() deletes."""
        assert mode in ("embedded", "services")
        self.mode = mode
        self.workdir = Path(workdir)
        self.port = port or free_port()
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
        self.env.pop("REDIS_KEY_PREFIX", None)  # the test run's own prefix is not this stack's
        self.owns_redis_prefix = False
        if mode == "services":
            self.env["REDIS_URL"] = redis_url or "redis://127.0.0.1:6379/3"
            self.owns_redis_prefix = redis_prefix is None and "REDIS_KEY_PREFIX" not in (env or {})
            self.env["REDIS_KEY_PREFIX"] = redis_prefix or new_redis_prefix()
        self.env.update(env or {})
        # Run by stop(), last added first (e.g. dropping the stack's scratch database).
        self.cleanups: list[Callable[[], None]] = []
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
        try:
            self.start_serve(timeout)
            if self.mode == "services":
                self.add_worker()
        except BaseException:
            self.stop()  # no process, key or database left behind by a stack that did not come up
            raise
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
        if self.owns_redis_prefix:
            try:
                delete_redis_prefix(self.env["REDIS_URL"], self.env["REDIS_KEY_PREFIX"])
            except Exception as exc:  # noqa: BLE001 - e.g. a private redis-server already gone
                print(f"bench.stack: could not delete Redis keys {self.env['REDIS_KEY_PREFIX']}*: {exc}",
                      file=sys.stderr)
        while self.cleanups:
            self.cleanups.pop()()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
