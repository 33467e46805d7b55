"""Publishing stage frames to `ws/paper/<id>` subscribers through the channel layer.

Frames are stored first (ledger), then sent to the run's group from a dedicated event loop.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time

from channels.layers import InMemoryChannelLayer, get_channel_layer

log = logging.getLogger(__name__)


def group_name(run_id: str) -> str:
    return f"paper.{run_id}"


_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def bind_server_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Embedded mode: InMemoryChannelLayer's queues belong to the server's event loop, so
    frames must be sent on that loop. The consumer binds it on its first connection."""
    global _loop
    if isinstance(get_channel_layer(), InMemoryChannelLayer):
        _loop = loop


def _publisher_loop() -> asyncio.AbstractEventLoop | None:
    """The loop frames are sent on: the server's (embedded) or a private thread's (Redis)."""
    global _loop
    layer = get_channel_layer()
    if isinstance(layer, InMemoryChannelLayer):
        return _loop if _loop is not None and not _loop.is_closed() else None
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="frame-publisher", daemon=True).start()
            _loop = loop
    return _loop


def frames_message(frames: list[dict]) -> dict:
    """The group message for a bar's frames: serialized once here, not once per subscriber."""
    return {"type": "paper.frames", "frames": [[f.get("seq", 0), json.dumps(f)] for f in frames]}


async def _send(run_id: str, frames: list[dict]) -> None:
    # One group message per bar, not one per frame: a bar's frames travel together.
    await get_channel_layer().group_send(group_name(run_id), frames_message(frames))


# After a failed send (Redis down), live delivery pauses this long: a session must not spend
# its bars waiting on a channel layer that is not there. Clients read what they missed back
# from the ledger when they reconnect.
RETRY_AFTER_SECONDS = 1.0
_down_until = 0.0


def frames_publish(run_id: str, frames: list[dict], *, wait: float = 2.0) -> None:
    """Send stored frames to live subscribers; a failure only costs live delivery."""
    global _down_until
    if not frames or time.monotonic() < _down_until:
        return
    loop = _publisher_loop()
    if loop is None:
        return  # embedded, and no browser has connected yet: frames are in the ledger
    future = asyncio.run_coroutine_threadsafe(_send(run_id, frames), loop)
    try:
        future.result(timeout=wait)
    except Exception as exc:
        future.cancel()
        _down_until = time.monotonic() + RETRY_AFTER_SECONDS
        log.warning("frames for %s not delivered live (%s); live delivery pauses %.0f s",
                    run_id, exc or type(exc).__name__, RETRY_AFTER_SECONDS)
