"""Stop delivery by push: a session waiting between bars wakes the moment it is told to stop.

In-process events always; with REDIS_URL, a Redis pub/sub channel reaches every worker process.
"""
from __future__ import annotations

import json
import logging
import threading

from django.conf import settings

log = logging.getLogger(__name__)

CHANNEL = "papertrade:session-stop"  # on Redis, after settings.REDIS_KEY_PREFIX
ALL = "*"

_lock = threading.Lock()
_listener: threading.Thread | None = None


class StopSignal(threading.Event):
    """An event that also carries why the session must stop (saves a DB read on wake-up)."""

    reason = ""
    # Set when this process's worker is shutting down: the session hands itself to another
    # worker (releases its lease and is enqueued again) instead of ending.
    handoff = False

    def fire(self, reason: str) -> None:
        self.reason = self.reason or reason
        self.set()

    def fire_handoff(self) -> None:
        self.handoff = True
        self.set()


_events: dict[str, StopSignal] = {}


def session_event(run_id: str) -> StopSignal:
    """The signal a running session waits on; registering it starts the pub/sub listener."""
    with _lock:
        event = _events.get(run_id)
        if event is None:
            event = _events[run_id] = StopSignal()
    _ensure_listener()
    return event


def session_event_drop(run_id: str) -> None:
    with _lock:
        _events.pop(run_id, None)


def _wake(run_ids: list[str], reason: str) -> int:
    with _lock:
        targets = list(_events.values()) if ALL in run_ids else [_events[r] for r in run_ids if r in _events]
    for event in targets:
        event.fire(reason)
    return len(targets)


# Set while this process's worker shuts down: it must not start (or resume) a session, because
# its consumer still fetches messages until the worker threads have stopped.
_draining = threading.Event()


def draining() -> bool:
    return _draining.is_set()


def draining_reset() -> None:
    """A worker (re)starts in this process: it may run sessions again."""
    _draining.clear()


def handoff_all() -> int:
    """This process is shutting down: every session it runs hands itself over. Returns how many."""
    _draining.set()
    with _lock:
        targets = list(_events.values())
    for event in targets:
        event.fire_handoff()
    return len(targets)


def stop_push(run_ids: list[str], reason: str = "") -> None:
    """Wake these sessions (or every session with ALL) wherever they run, saying why."""
    if not run_ids:
        return
    _wake(run_ids, reason)
    if settings.REDIS_URL:
        try:
            _redis().publish(settings.REDIS_KEY_PREFIX + CHANNEL, json.dumps({"ids": run_ids, "reason": reason}))
        except Exception:  # the DB stop flag still reaches the session on its next poll
            log.exception("could not publish a session stop on Redis")


_client = None


def _redis():
    global _client
    if _client is None:
        import redis

        _client = redis.Redis.from_url(settings.REDIS_URL)
    return _client


def _ensure_listener() -> None:
    global _listener
    if not settings.REDIS_URL:
        return
    with _lock:
        if _listener is not None and _listener.is_alive():
            return
        _listener = threading.Thread(target=_listen, name="session-stop-listener", daemon=True)
        _listener.start()


def _listen() -> None:
    import redis

    while True:
        try:
            pubsub = redis.Redis.from_url(settings.REDIS_URL).pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(settings.REDIS_KEY_PREFIX + CHANNEL)
            for message in pubsub.listen():
                try:
                    body = json.loads(message["data"])
                    _wake(list(body["ids"]), str(body.get("reason", "")))
                except (ValueError, TypeError, KeyError):
                    log.warning("ignoring a malformed stop message: %r", message)
        except Exception:
            log.exception("session-stop listener lost Redis; reconnecting")
            threading.Event().wait(1.0)
