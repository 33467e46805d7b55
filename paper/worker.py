"""Dramatiq middleware that supervises paper sessions in every worker process.

- Every PAPER_RECONCILE_SECONDS, `sessions_reconcile()` resumes sessions whose worker died
  (SIGKILL, OOM, a lost host) and re-enqueues queued sessions whose message Redis lost.
- On shutdown (SIGTERM, a deploy), sessions are not waited for (they run for hours): each one
  releases its lease and is enqueued again, so another worker resumes it from the ledger at once.
- At boot, what a worker keeps for its whole life (Django, the engine, matplotlib for the charts)
  is loaded and frozen out of the cyclic garbage collector (`gc.freeze`). Chart rendering makes
  much cyclic garbage (collected young, see paper.artifacts._plot), and a full collection
  otherwise traverses every long-lived object too: with both, no collection over 50 ms after
  start-up in a kill-switch bench run (there were 150-280 ms ones a few times a minute).
"""
from __future__ import annotations

import gc
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
        _freeze_long_lived()
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


def _freeze_long_lived() -> None:
    """Load what sessions and their artifacts use, then move every object alive now out of the
    garbage collector's reach (it lives as long as the process)."""
    import matplotlib.backends.backend_agg  # noqa: F401 - the charts' first use would load it
    import matplotlib.dates  # noqa: F401
    import matplotlib.figure  # noqa: F401

    import paper.artifacts  # noqa: F401
    import paper.sessions  # noqa: F401

    gc.collect()
    gc.freeze()
