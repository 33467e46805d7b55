"""`ws/paper/<paper_run_id>`: a session's stage frames, the recent stored ones first, then live.

Frames are `{task_id, stage, message, timestamp, seq, **extras}` with `equity` and `positions`.
A client that reconnects asks for `?after_seq=N` (the last seq it saw) and gets exactly the
frames it missed, then live ones: a server restart or a network drop costs no frame.
"""
from __future__ import annotations

import asyncio
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

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
        await self.channel_layer.group_add(self.group, self.channel_name)
        backlog = await _backlog(self.run_id, settings.PAPER_FRAME_BACKLOG, after_seq)
        if backlog is None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            await self.close(code=4404)
            return
        await self.accept()
        for frame in backlog:
            await self.send_json(frame)
            self.last_seq = max(self.last_seq, frame.get("seq", 0))

    async def disconnect(self, code: int) -> None:
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)

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
            for frame in await _frames_between(self.run_id, self.last_seq, first):
                await self.send_json(frame)
                self.last_seq = max(self.last_seq, frame.get("seq", 0))
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
