"""Dramatiq middleware that supervises paper sessions in every worker process.

- Every PAPER_RECONCILE_SECONDS, `sessions_reconcile()` resumes sessions whose worker died
  (SIGKILL, OOM, a lost host) and re-enqueues queued sessions whose message Redis lost.
- On shutdown (SIGTERM, a deploy), sessions are not waited for (they run for hours): each one
  releases its lease and is enqueued again, so another worker resumes it from the ledger at once.
"""
from __future__ import annotations

import logging
import random
import threading

import dramatiq

log = logging.getLogger(__name__)


class SessionSupervisor(dramatiq.Middleware):
    def __init__(self):
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker, worker) -> None:
        from django.conf import settings

        from paper import halts

        halts.draining_reset()
        interval = settings.PAPER_RECONCILE_SECONDS
        if interval <= 0 or (self._thread is not None and self._thread.is_alive()):
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(interval,), name="session-reconciler", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker, worker) -> None:
        from paper import halts

        self._stop.set()
        handed = halts.handoff_all()
        if handed:
            log.warning("worker shutting down: handing %d session(s) to other workers", handed)

    def _run(self, interval: float) -> None:
        from django.db import connection

        from paper.sessions import sessions_reconcile

        # Jittered, so the workers of a deployment do not all reconcile at the same instant.
        while not self._stop.wait(interval * random.uniform(0.8, 1.2)):
            try:
                sessions_reconcile()
            except Exception:  # the database may be down; try again next round
                log.warning("session reconcile failed", exc_info=True)
            finally:
                try:
                    connection.close()
                except Exception:
                    pass
