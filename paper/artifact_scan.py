"""Scans of the paper-session artifact root for requests: run off the request's thread, bounded.

`GET /paper/health`, `/paper/alerts` and `/paper/promotion`, the dashboard's pages of the same
names and the top bar (on every page) all read the whole root. The reads themselves never wait
(paper/artifact_files.py: regular files only, non-blocking, bounded); this bounds a slow root (a
slow disk, thousands of folders): the scan runs in a thread of its own and the request waits
for it at most PAPER_SCAN_TIMEOUT_SECONDS, then gets ScanTimeout (503 `scan_timeout`). At most
SCAN_THREADS scans run at once, however many requests ask. Scan threads are daemons: one still
running when its request gave up never holds up the process's exit.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import connections

from config.errors import AppError

SCAN_TIMEOUT_SECONDS = 20.0
SCAN_THREADS = 2
_slots = threading.BoundedSemaphore(SCAN_THREADS)


class ScanTimeout(AppError):
    status = 503


def paper_root() -> Path:
    """The paper-session artifact root (made if missing)."""
    root = settings.OUTPUTS_DIR / "paper_sessions"
    root.mkdir(parents=True, exist_ok=True)
    return root


def root_scan(what: str, compute: Callable, **kwargs):
    """`compute(paper_root(), **kwargs)` in a scan thread; ScanTimeout if it takes too long."""
    timeout = float(getattr(settings, "PAPER_SCAN_TIMEOUT_SECONDS", SCAN_TIMEOUT_SECONDS))
    deadline = time.monotonic() + timeout
    refused = ScanTimeout("scan_timeout", f"the {what} scan of the paper-session artifact root did not finish "
                                          f"within {timeout:g} s; retry shortly")
    if not _slots.acquire(timeout=timeout):
        raise refused
    done, outcome = threading.Event(), {}

    def run() -> None:
        try:
            outcome["value"] = compute(paper_root(), **kwargs)
        except BaseException as exc:  # handed to the request, which raises it
            outcome["error"] = exc
        finally:
            # A scan reads files, not the database; should a compute ever query, its connection
            # goes back to the pool with the thread rather than being held by a dead thread.
            connections.close_all()
            _slots.release()
            done.set()

    threading.Thread(target=run, name=f"paper-scan-{what}", daemon=True).start()
    if not done.wait(max(0.0, deadline - time.monotonic())):
        raise refused
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
