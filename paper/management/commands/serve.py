"""`manage.py serve`: the embedded server (one process) or one daphne of a services deployment.

Embedded (no REDIS_URL): SQLite, the in-memory channel layer and an in-process Dramatiq worker.
"""
from __future__ import annotations

import logging

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

log = logging.getLogger(__name__)


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

    @staticmethod
    def _check(opts) -> None:
        """Bad flags are refused (exit 2) before anything is migrated, created or bound."""
        if not 0 <= opts["port"] <= 65535:
            raise CommandError(f"--port must be from 0 to 65535, not {opts['port']}", returncode=2)
        if not 1 <= opts["threads"] <= 1000:
            raise CommandError(f"--threads must be from 1 to 1000, not {opts['threads']}", returncode=2)
        host = opts["host"]
        # A name or an address (IPv6 too: colons are fine); not a URL, a path or a user@host.
        if not host or len(host) > 253 or any(ch.isspace() or ch in "\x00/@" for ch in host):
            raise CommandError(f"--host must be a host name or an IP address, not {host[:60]!r}", returncode=2)

    def handle(self, *args, **opts):
        self._check(opts)
        from daphne.endpoints import build_endpoint_description_strings
        from daphne.server import Server
        from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

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
        self.stdout.write(f"serving {url} in {mode} mode; worker threads: {opts['threads'] if run_worker else 0}")
        self.stdout.flush()
        from channels.routing import ProtocolTypeRouter

        from config.asgi import application

        # /static/ (admin CSS) is served from here too, so one process is the whole product.
        app = ProtocolTypeRouter({"http": ASGIStaticFilesHandler(application), "websocket": application})
        try:
            Server(
                application=app,
                endpoints=build_endpoint_description_strings(host=opts["host"], port=opts["port"]),
                signal_handlers=True,
                verbosity=0,
                websocket_timeout=-1,
            ).run()
        finally:
            if worker is not None:
                worker.stop(timeout=2000)

    def _demo(self, url: str) -> None:
        from bots.management.commands.backtest import format_backtest
        from paper.demo import demo_environment_ensure

        env = demo_environment_ensure()
        self.stdout.write(format_backtest(env.backtest))
        self.stdout.write(
            "\n"
            f"  URL       {url}/  (API docs {url}/docs, admin {url}/admin/)\n"
            f"  login     {env.user.username} / {env.password}\n"
            f"  API token {env.token}\n"
            f"  demo bot  id {env.bot.pk} ({env.bot.name}), gate: passed\n\n"
            f"  TOKEN={env.token}\n"
            f"  curl -H \"Authorization: Bearer $TOKEN\" {url}/bots/{env.bot.pk}\n"
            f"  curl -H \"Authorization: Bearer $TOKEN\" -X POST {url}/bots/{env.bot.pk}/paper -d '{{\"starting_cash\":100000,\"duration_minutes\":60}}'\n"
        )
