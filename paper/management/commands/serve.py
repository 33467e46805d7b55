"""`manage.py serve`: the embedded server (one process) or the daphne of a services deployment.

Embedded (no REDIS_URL): SQLite, the in-memory channel layer and an in-process Dramatiq worker.
Services: `--processes N` runs N daphne processes on one port, so one host uses its cores
(Python runs one thread at a time per process). Each child listens on its own socket with
SO_REUSEPORT and hands it to daphne (`daphne --fd`); the kernel spreads new connections over
them evenly. (One listening socket shared by all, as supervisor's fcgi-program does, let one
process accept a whole burst of keep-alive connections and keep them: measured, one daphne did
all the work.) The parent holds the port, starts again a child that dies, and on SIGTERM or
SIGINT stops them all. A connection that reaches a child's accept queue in the instant that
child dies is reset (each child has its own queue), as with any server process that dies:
clients reconnect (the dashboard's socket does) or retry.
"""
from __future__ import annotations

import argparse
import gc
import logging
import signal
import socket
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

log = logging.getLogger(__name__)

# The demo operator's API token is stored hashed, like every token, so its raw value cannot be
# read back from the database; `serve` keeps it in this file under OUTPUTS_DIR to show the same
# token at every start (see Command._demo_token).
DEMO_TOKEN_FILE = "demo-api-token"


class Command(BaseCommand):
    help = "Serve HTTP + WebSockets with daphne; embedded mode also runs the session worker in-process."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-demo", action="store_true", help="skip the demo operator, bot, backtest and token")
        parser.add_argument("--worker", choices=["auto", "yes", "no"], default="auto",
                            help="run the session worker in-process (auto: only without REDIS_URL)")
        parser.add_argument("--threads", type=int, default=settings.EMBEDDED_WORKER_THREADS,
                            help="in-process worker threads (one per concurrent session)")
        parser.add_argument("--processes", type=int, default=settings.SERVE_PROCESSES,
                            help="daphne processes sharing the port (services mode; default SERVE_PROCESSES, 1)")
        # A child of --processes: listen on host:port with SO_REUSEPORT and serve, nothing else.
        parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)

    @staticmethod
    def _check(opts) -> None:
        """Bad flags are refused (exit 2) before anything is migrated, created or bound."""
        if not 0 <= opts["port"] <= 65535:
            raise CommandError(f"--port must be from 0 to 65535, not {opts['port']}", returncode=2)
        if not 1 <= opts["threads"] <= 1000:
            raise CommandError(f"--threads must be from 1 to 1000, not {opts['threads']}", returncode=2)
        if not 1 <= opts["processes"] <= 64:
            raise CommandError(f"--processes must be from 1 to 64, not {opts['processes']}", returncode=2)
        if opts["processes"] > 1 and not settings.REDIS_URL:
            raise CommandError("--processes above 1 needs REDIS_URL (services mode): processes share "
                               "sessions' frames through Redis; embedded mode is one process", returncode=2)
        if opts["processes"] > 1 and ":" in opts["host"]:
            # daphne's fd endpoint adopts IPv4 sockets only.
            raise CommandError("--processes above 1 needs an IPv4 --host", returncode=2)
        if opts["processes"] > 1 and opts["worker"] == "yes":
            raise CommandError("--processes above 1 serves HTTP only: run sessions with `manage.py rundramatiq`",
                               returncode=2)
        host = opts["host"]
        # A name or an address (IPv6 too: colons are fine); not a URL, a path or a user@host.
        if not host or len(host) > 253 or any(ch.isspace() or ch in "\x00/@" for ch in host):
            raise CommandError(f"--host must be a host name or an IP address, not {host[:60]!r}", returncode=2)

    def _secret_key_check(self) -> bool:
        """Warn loudly (stderr and the log) while SECRET_KEY is the development default of
        config/settings.py, which anyone can read: sessions, CSRF tokens and password reset
        links signed with it can be forged. True when it warned."""
        if settings.SECRET_KEY != getattr(settings, "DEV_SECRET_KEY", None):
            return False
        log.warning("SECRET_KEY is the development default; set the SECRET_KEY environment variable")
        bar = "!" * 78
        self.stderr.write(
            f"{bar}\n"
            "!! WARNING: SECRET_KEY is the development default from config/settings.py.\n"
            "!! Anyone can read it, so sessions, CSRF tokens and password reset links can be\n"
            "!! forged. Fine for a local demo only. Set the SECRET_KEY environment variable (or\n"
            "!! SECRET_KEY=... in .env) to a long random value, e.g.:\n"
            "!!   export SECRET_KEY=\"$(python3 -c 'import secrets; print(secrets.token_urlsafe(50))')\"\n"
            f"{bar}\n"
        )
        self.stderr.flush()
        return True

    @staticmethod
    def _database_check() -> None:
        """A database that cannot be reached is refused (exit 2) with the driver's reason, before
        anything is migrated or served (it was a pool timeout's traceback after 5 s)."""
        from django.db import DatabaseError, connection

        try:
            if connection.vendor == "postgresql":
                import psycopg

                # Straight to the server, not through the pool: its error says why (no such
                # database, connection refused, authentication), the pool's only that it timed out.
                try:
                    psycopg.connect(**{**connection.get_connection_params(), "connect_timeout": 5}).close()
                except psycopg.Error as exc:
                    raise DatabaseError(str(exc)) from None
            else:
                connection.ensure_connection()
        except DatabaseError as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise CommandError(f"cannot connect to the database ({connection.vendor}): {reason[:300]}",
                               returncode=2) from None

    def handle(self, *args, **opts):
        if opts["reuse_port"]:
            self._check(opts)
            try:
                listener = _reuse_port_socket(opts["host"], opts["port"])
            except OSError as exc:
                raise CommandError(f"cannot listen on {opts['host']}:{opts['port']}: {exc}", returncode=2) from None
            listener.listen(1024)
            self._daphne(endpoints=[f"fd:fileno={listener.fileno()}"])
            return
        self._check(opts)
        self._database_check()
        self._secret_key_check()
        call_command("migrate", verbosity=0, interactive=False)
        url = f"http://{opts['host']}:{opts['port']}"
        if not opts["no_demo"]:
            self._demo(url)
        embedded = not settings.REDIS_URL
        run_worker = opts["worker"] == "yes" or (opts["worker"] == "auto" and embedded)
        worker = None
        if run_worker:
            import dramatiq

            from paper.sessions import sessions_resume_orphans, sessions_sweep_stale

            worker = dramatiq.Worker(dramatiq.get_broker(), worker_threads=opts["threads"], worker_timeout=100)
            worker.start()
            if embedded:
                # The in-memory broker lost its queue with the last process: pick the sessions up again.
                resumed = sessions_resume_orphans()
                if resumed:
                    self.stdout.write(f"resuming {len(resumed)} session(s) from the ledger: {', '.join(resumed)}")
            else:
                sessions_sweep_stale()
        mode = "embedded (SQLite, in-process worker and channel layer)" if embedded else "services (PostgreSQL/Redis)"
        processes = f"; daphne processes: {opts['processes']}" if opts["processes"] > 1 else ""
        self.stdout.write(f"serving {url} in {mode} mode; worker threads: {opts['threads'] if run_worker else 0}"
                          f"{processes}")
        self.stdout.flush()
        try:
            if opts["processes"] > 1:
                self._serve_processes(opts["host"], opts["port"], opts["processes"])
            else:
                from daphne.endpoints import build_endpoint_description_strings

                self._daphne(endpoints=build_endpoint_description_strings(host=opts["host"], port=opts["port"]))
        finally:
            if worker is not None:
                worker.stop(timeout=2000)

    @staticmethod
    def _daphne(*, endpoints: list[str]) -> None:
        from channels.routing import ProtocolTypeRouter
        from daphne.server import Server
        from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

        from config import http_limits
        from config.asgi import application

        # An oversized request head is answered 431 (or 414), not dropped (config/http_limits.py).
        http_limits.install()
        # /static/ (admin CSS) is served from here too, so one process is the whole product.
        app = ProtocolTypeRouter({"http": ASGIStaticFilesHandler(application), "websocket": application})
        # Everything loaded so far (Django, the apps, the API's schemas: ~1.5 million objects)
        # lives as long as the process: keep it out of the cyclic garbage collector's full
        # collections, which otherwise stopped every request for ~110 ms every ~13 s under load.
        gc.collect()
        gc.freeze()
        Server(application=app, endpoints=endpoints, signal_handlers=True, verbosity=0, websocket_timeout=-1).run()

    def _serve_processes(self, host: str, port: int, n: int) -> None:
        """Run n daphne children on host:port until SIGTERM/SIGINT."""
        try:
            # Bound, never listening: holds the port (and learns it for --port 0) without taking
            # connections; the children's listening sockets join it.
            holder = _reuse_port_socket(host, port)
        except OSError as exc:
            raise CommandError(f"cannot listen on {host}:{port}: {exc}", returncode=2) from None
        argv = [sys.executable, str(settings.BASE_DIR / "manage.py"), "serve", "--reuse-port",
                "--host", host, "--port", str(holder.getsockname()[1])]
        stopping = False

        def stop(signum, frame) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        from django.db import connections

        connections.close_all()  # the parent only supervises: no database connection held
        children = [subprocess.Popen(argv) for _ in range(n)]
        try:
            while not stopping:
                time.sleep(0.2)
                for i, child in enumerate(children):
                    if child.poll() is not None and not stopping:
                        log.warning("daphne process %s exited with %s; starting another", child.pid, child.returncode)
                        time.sleep(1.0)  # a child that cannot start is not restarted in a tight loop
                        if not stopping:
                            children[i] = subprocess.Popen(argv)
        finally:
            for child in children:
                if child.poll() is None:
                    child.terminate()
            deadline = time.monotonic() + 10
            for child in children:
                try:
                    child.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait(5)
            holder.close()

    @staticmethod
    def _demo_token(user):
        """The demo operator's one valid demo token: (row, raw, reused).

        Reused from demo_token_path() while it still verifies (same database, not revoked), so a
        restart keeps the TOKEN scripts and open terminals already use. Otherwise (first start, a
        new database, a revoked token) a new one is minted, written there, and the operator's
        other active tokens named "demo" are revoked (earlier starts minted one each, never
        revoked): exactly one is ever valid. The raw token on disk is readable by the serving OS
        user only (mode 0600); the database still holds only hashes, so a leaked database does
        not leak it.
        """
        from paper.tokens import api_token_kept

        return api_token_kept(user=user, name="demo", path=demo_token_path())

    def _demo(self, url: str) -> None:
        from bots.management.commands.backtest import format_backtest
        from paper.demo import demo_environment_ensure

        env = demo_environment_ensure(with_token=False)
        _, env.token, reused = self._demo_token(env.user)
        self.stdout.write(format_backtest(env.backtest))
        self.stdout.write(
            "\n"
            f"  URL       {url}/  (API docs {url}/docs, admin {url}/admin/)\n"
            f"  login     {env.user.username} / {env.password}\n"
            f"  API token {env.token}  ({'the same as at the last start' if reused else 'new'}, kept in "
            f"{demo_token_path()})\n"
            f"  demo bot  id {env.bot.pk} ({env.bot.name}), gate: passed\n\n"
            f"  TOKEN={env.token}\n"
            f"  curl -H \"Authorization: Bearer $TOKEN\" {url}/bots/{env.bot.pk}\n"
            f"  curl -H \"Authorization: Bearer $TOKEN\" -X POST {url}/bots/{env.bot.pk}/paper -d '{{\"starting_cash\":100000,\"duration_minutes\":60}}'\n"
        )


def demo_token_path():
    """Where `serve` keeps the demo token's raw value (mode 0600), beside the run artifacts."""
    return settings.OUTPUTS_DIR / DEMO_TOKEN_FILE


def _reuse_port_socket(host: str, port: int) -> socket.socket:
    """An IPv4 TCP socket bound to host:port with SO_REUSEPORT (not yet listening)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock
