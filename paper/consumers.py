"""`ws/paper/<paper_run_id>`: a session's stage frames, the recent stored ones first, then live.

Frames are `{task_id, stage, message, timestamp, seq, **extras}` with `equity` and `positions`.
A client that reconnects asks for `?after_seq=N` (the last seq it saw) and gets exactly the
frames it missed, then live ones: a server restart or a network drop costs no frame.

A socket that opens while the channel layer (Redis) is down is still accepted: it gets its
backlog, then follows the ledger every `LEDGER_POLL_SECONDS` and tries to join its run's group
again each time. Once it has joined, frames come live as usual.
"""
from __future__ import annotations

import asyncio
import logging
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from redis.exceptions import RedisError

from paper.frames import bind_server_loop, group_name

# Client messages are not part of the protocol; anything big is refused outright (in bytes,
# so 3,000 "é" are 6,000 bytes, not 3,000), and a client that keeps talking is closed.
MAX_CLIENT_MESSAGE = 4096
MAX_CLIENT_MESSAGES = 100
CLOSE_TOO_BIG = 1009
CLOSE_POLICY = 1008
# At most this many missed frames are replayed to a reconnecting client (?after_seq=); one
# that missed more reads the rest from GET /paper/{id}/frames?after_seq=.
MAX_CATCH_UP = 10_000
# A socket whose group join failed (Redis down) reads new frames from the ledger this often.
LEDGER_POLL_SECONDS = 1.0
# A join that takes longer than this counts as failed (a Redis that accepts but does not answer).
JOIN_TIMEOUT_SECONDS = 2.0
LAYER_DOWN = (RedisError, OSError, asyncio.TimeoutError)

log = logging.getLogger(__name__)


def _after_seq(scope) -> int | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("after_seq")
    if not values:
        return None
    try:
        value = int(values[-1])
    except ValueError:
        return None
    return value if 0 <= value < 2**62 else None


@database_sync_to_async
def _backlog(run_id: str, limit: int, after_seq: int | None = None) -> list[dict] | None:
    from ledger.models import PaperFrame, PaperTradingRun

    if not PaperTradingRun.objects.filter(pk=run_id).exists():
        return None
    stored = PaperFrame.objects.filter(paper_run_id=run_id)
    if after_seq is not None:
        return list(stored.filter(seq__gt=after_seq).order_by("seq").values_list("payload", flat=True)[:MAX_CATCH_UP])
    frames = list(stored.order_by("-seq").values_list("payload", flat=True)[:limit])
    frames.reverse()
    return frames


@database_sync_to_async
def _frames_between(run_id: str, after_seq: int, before_seq: int) -> list[dict]:
    from ledger.models import PaperFrame

    return list(PaperFrame.objects.filter(paper_run_id=run_id, seq__gt=after_seq, seq__lt=before_seq)
                .order_by("seq").values_list("payload", flat=True)[:MAX_CATCH_UP])


class PaperFramesConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        if self.scope.get("origin_absent") and self.scope.get("auth_method") != "token":
            await self.close(code=4403)  # a cookie-authenticated socket must say where it comes from
            return
        bind_server_loop(asyncio.get_running_loop())
        self.run_id = self.scope["url_route"]["kwargs"]["paper_run_id"]
        self.group = group_name(self.run_id)
        after_seq = _after_seq(self.scope)
        self.last_seq = after_seq or 0
        # Join the group before reading the backlog: a frame stored after the read is then
        # also delivered live, and the seq check drops the ones already sent.
        joined = await self._join()
        backlog = await _backlog(self.run_id, settings.PAPER_FRAME_BACKLOG, after_seq)
        if backlog is None:
            if joined:
                await self.channel_layer.group_discard(self.group, self.channel_name)
            await self.close(code=4404)
            return
        await self.accept()
        await self._send_stored(backlog)
        if not joined:
            log.warning("ws/paper/%s: channel layer unreachable; following the ledger every %.0f s",
                        self.run_id, LEDGER_POLL_SECONDS)
            self.follower = asyncio.create_task(self._follow_ledger())

    async def _join(self) -> bool:
        try:
            await asyncio.wait_for(self.channel_layer.group_add(self.group, self.channel_name),
                                   JOIN_TIMEOUT_SECONDS)
        except LAYER_DOWN:
            return False
        return True

    async def _follow_ledger(self) -> None:
        """Until the group join works: poll the ledger for new frames, retrying the join first
        (the same order as `connect`, so no frame falls between the last read and the join)."""
        joined = False
        while not joined:
            await asyncio.sleep(LEDGER_POLL_SECONDS)
            joined = await self._join()
            await self._send_stored(await _frames_between(self.run_id, self.last_seq, 2**62))
        log.info("ws/paper/%s: joined the channel layer; frames are live again", self.run_id)

    async def _send_stored(self, frames: list[dict]) -> None:
        # The live path and the ledger follower can interleave: a frame goes out only if it is
        # newer than the last one sent, and last_seq moves before the send yields.
        for frame in frames:
            seq = frame.get("seq", 0)
            if seq <= self.last_seq and self.last_seq:
                continue
            self.last_seq = max(self.last_seq, seq)
            await self.send_json(frame)

    async def disconnect(self, code: int) -> None:
        follower = getattr(self, "follower", None)
        if follower is not None:
            follower.cancel()
        if getattr(self, "group", None):
            try:
                await self.channel_layer.group_discard(self.group, self.channel_name)
            except LAYER_DOWN:
                pass  # Redis is down: the subscription went with the connection

    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        text = text_data or ""
        # A character is at most 4 bytes: only text that might be too big is encoded to measure it.
        size = len(bytes_data or b"") + (len(text) if len(text) * 4 <= MAX_CLIENT_MESSAGE
                                          else len(text.encode("utf-8", "surrogatepass")))
        if size > MAX_CLIENT_MESSAGE:
            await self.close(code=CLOSE_TOO_BIG)  # message too big
            return
        self.client_messages = getattr(self, "client_messages", 0) + 1
        if self.client_messages > MAX_CLIENT_MESSAGES:
            await self.close(code=CLOSE_POLICY)  # policy violation: this socket is not for talking to
            return
        await self.send_json({"stage": "error", "message": "this socket only sends frames"})

    async def dispatch(self, message: dict) -> None:
        # Channels closes stale DB connections before every message through a thread hop
        # that all consumers share; frame messages touch no DB, and with 100 subscribers
        # that hop was most of the fan-out time.
        if message.get("type") == "paper.frames":
            await self.paper_frames(message)
            return
        await super().dispatch(message)

    async def paper_frames(self, event: dict) -> None:
        first = next((seq for seq, _ in event["frames"] if seq > self.last_seq), None)
        if first is not None and first > self.last_seq + 1 and self.last_seq:
            # A gap: frames published while the channel layer was down (a Redis restart) never
            # arrived. They are in the ledger: send them first, so the client misses nothing.
            await self._send_stored(await _frames_between(self.run_id, self.last_seq, first))
        for seq, text in event["frames"]:
            if seq <= self.last_seq:
                continue  # already sent from the stored backlog
            self.last_seq = seq
            await self.send(text_data=text)


class NoRouteConsumer(AsyncJsonWebsocketConsumer):
    """Any other ws/ path (an unknown route, a run id past the route's 40 characters): closed with
    4404, instead of the router's "No route found" exception (a traceback in the server log)."""

    async def connect(self) -> None:
        await self.close(code=4404)
