"""`ws/paper/<paper_run_id>`: a session's stage frames, the recent stored ones first, then live.

Frames are `{task_id, stage, message, timestamp, seq, **extras}` with `equity` and `positions`.
A client that reconnects asks for `?after_seq=N` (the last seq it saw) and gets exactly the
frames it missed, then live ones: a server restart or a network drop costs no frame.

A socket that opens while the channel layer (Redis) is down is still accepted: it gets its
backlog, then follows the ledger every `LEDGER_POLL_SECONDS` and tries to join its run's group
again each time. Once it has joined, frames come live as usual. A socket that has heard nothing
live for `PAPER_WS_IDLE_SECONDS` (default 5 s) while its run has not sent its terminal frame
(session.completed / session.stopped / session.failed) reads the ledger for frames after the
last one it sent: a frame stored while its publish was lost (a goodbye frame written during a
Redis outage) reaches the client without waiting for a later live frame. That is one indexed
query per idle interval per socket (spacing out to 4 intervals while they find nothing), and
none while frames flow.

The socket is read-only: any active authenticated user may watch any run (operators see the
whole desk), and nothing a client sends changes anything; it is answered with an error frame.
A socket opened with an API token re-checks its token every `PAPER_WS_AUTH_RECHECK_SECONDS`
(default 30 s; one indexed query, never per frame): a revoked or expired token, or a
deactivated user, ends it with 4401. A session-cookie socket is re-checked as often: its user
still active, its session not logged out.

Close codes (after the handshake: a refused socket is accepted, sent one final frame
`{"stage": "error", "code": <close code>, "message": "..."}`, then closed with the code, so a
client can tell the reasons apart; a browser that does not see the close code reads the frame):

  4401  not authenticated: no session or token, an unknown/revoked/expired token, an inactive
        user; also an open socket whose token was revoked or expired, or whose user was
        deactivated or logged out
  4403  forbidden origin: an Origin header that is not an allowed host (any socket), or no
        Origin on a session-cookie socket (config/wsauth.py, OriginPolicy)
  4404  no such run, or no such socket route (NoRouteConsumer)
  4008  policy: the client sent more than MAX_CLIENT_MESSAGES messages (this socket is not
        for talking to)
  4009  a client message bigger than MAX_CLIENT_MESSAGE bytes

Any other code (1001, 1006, 1011: the server went away, the connection dropped, a server error)
is not a refusal: reconnect with `?after_seq=N`. A 4xxx code is final; retrying will not help
(a 4401 client may log in again or use a valid token first).

1008 and 1009 are not used: daphne (autobahn) lets an application send only 1000 and 3000-4999;
anything else became 1011 and a traceback in the server log.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.db import DatabaseError
from redis.exceptions import RedisError

from paper.frames import bind_server_loop, group_name

# Close codes (see the module docstring).
CLOSE_NOT_AUTHENTICATED = 4401
CLOSE_FORBIDDEN_ORIGIN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_POLICY = 4008
CLOSE_TOO_BIG = 4009
# Client messages are not part of the protocol; anything big is refused outright (in bytes,
# so 3,000 "é" are 6,000 bytes, not 3,000), and a client that keeps talking is closed.
MAX_CLIENT_MESSAGE = 4096
MAX_CLIENT_MESSAGES = 100
# At most this many missed frames are replayed to a reconnecting client (?after_seq=); one
# that missed more reads the rest from GET /paper/{id}/frames?after_seq=.
MAX_CATCH_UP = 10_000
# A socket whose group join failed (Redis down) reads new frames from the ledger this often.
LEDGER_POLL_SECONDS = 1.0
# A join that takes longer than this counts as failed (a Redis that accepts but does not answer).
JOIN_TIMEOUT_SECONDS = 2.0
# Defaults of the settings PAPER_WS_IDLE_SECONDS and PAPER_WS_AUTH_RECHECK_SECONDS (0: off).
IDLE_SECONDS = 5.0
AUTH_RECHECK_SECONDS = 30.0
# Idle reads that find nothing space out up to this many idle intervals (20 s by default).
IDLE_BACKOFF = 4
# A run's last frame has one of these stages (paper.sessions.TERMINAL_STAGES).
TERMINAL_STAGES = frozenset({"session.completed", "session.stopped", "session.failed"})
LAYER_DOWN = (RedisError, OSError, asyncio.TimeoutError)

log = logging.getLogger(__name__)


def error_frame(code: int, message: str) -> dict:
    return {"stage": "error", "code": code, "message": message}


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


@database_sync_to_async
def _still_allowed(scope) -> bool:
    """Whether the socket's credentials still hold: its token (the same check as at the
    handshake: not revoked, not expired, an active user), or its user and session."""
    user = scope["user"]
    if scope.get("auth_method") == "token":
        from paper.tokens import api_token_verify

        again = api_token_verify(scope.get("auth_token"))
        return again is not None and again.pk == user.pk
    from django.contrib.auth import SESSION_KEY, get_user_model

    if not get_user_model().objects.filter(pk=user.pk, is_active=True).exists():
        return False
    session = scope.get("session")
    key = getattr(session, "session_key", None)
    if key is None:
        return True
    # The session as stored now (whatever the engine): logged out, it is gone or has no user.
    return str(session.__class__(session_key=key).get(SESSION_KEY)) == str(user.pk)


class Refusal(AsyncJsonWebsocketConsumer):
    """Accepts, sends one error frame, closes with `code`: a refusal a client can tell apart
    (before the upgrade, daphne can only answer HTTP 403)."""

    code = CLOSE_NOT_FOUND
    message = "no such socket"

    async def connect(self) -> None:
        await self.refuse(self.code, self.message)

    async def refuse(self, code: int, message: str) -> None:
        await self.accept()
        await self.send_json(error_frame(code, message))
        await self.close(code=code)


class PaperFramesConsumer(Refusal):
    closing = False
    group = None
    follower = None
    watcher = None
    last_frame: dict | str | None = None  # the last frame sent: is it the run's terminal frame?

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_active:
            await self.refuse(CLOSE_NOT_AUTHENTICATED, "not authenticated: log in, or send an API token")
            return
        if self.scope.get("origin_absent") and self.scope.get("auth_method") != "token":
            # a cookie-authenticated socket must say where it comes from
            await self.refuse(CLOSE_FORBIDDEN_ORIGIN, "a session-cookie socket must send an allowed Origin")
            return
        bind_server_loop(asyncio.get_running_loop())
        self.run_id = self.scope["url_route"]["kwargs"]["paper_run_id"]
        after_seq = _after_seq(self.scope)
        self.last_seq = after_seq or 0
        # Join the group before reading the backlog: a frame stored after the read is then
        # also delivered live, and the seq check drops the ones already sent.
        joined = await self._join()
        backlog = await _backlog(self.run_id, settings.PAPER_FRAME_BACKLOG, after_seq)
        if backlog is None:
            await self._leave()
            await self.refuse(CLOSE_NOT_FOUND, f"no paper run {self.run_id}")
            return
        await self.accept()
        self.last_heard = time.monotonic()
        await self._send_stored(backlog)
        if not joined:
            log.warning("ws/paper/%s: channel layer unreachable; following the ledger every %.0f s",
                        self.run_id, LEDGER_POLL_SECONDS)
            self.follower = asyncio.create_task(self._follow_ledger())
        self.idle_seconds = float(getattr(settings, "PAPER_WS_IDLE_SECONDS", IDLE_SECONDS) or 0)
        self.recheck_seconds = float(getattr(settings, "PAPER_WS_AUTH_RECHECK_SECONDS", AUTH_RECHECK_SECONDS) or 0)
        if self.idle_seconds > 0 or self.recheck_seconds > 0:
            self.watcher = asyncio.create_task(self._watch())
            self.watcher.add_done_callback(self._watch_ended)

    async def _join(self) -> bool:
        group = group_name(self.run_id)
        try:
            await asyncio.wait_for(self.channel_layer.group_add(group, self.channel_name), JOIN_TIMEOUT_SECONDS)
        except LAYER_DOWN:
            return False
        self.group = group
        return True

    async def _leave(self) -> None:
        group, self.group = self.group, None
        if group:
            try:
                await self.channel_layer.group_discard(group, self.channel_name)
            except LAYER_DOWN:
                pass  # Redis is down: the subscription went with the connection

    async def _follow_ledger(self) -> None:
        """Until the group join works: poll the ledger for new frames, retrying the join first
        (the same order as `connect`, so no frame falls between the last read and the join)."""
        joined = False
        while not joined and not self.closing:
            await asyncio.sleep(LEDGER_POLL_SECONDS)
            joined = await self._join()
            await self._send_stored(await _frames_between(self.run_id, self.last_seq, 2**62))
            self.last_heard = time.monotonic()
        if joined:
            log.info("ws/paper/%s: joined the channel layer; frames are live again", self.run_id)

    def _ended(self) -> bool:
        frame = self.last_frame
        if isinstance(frame, str):
            frame = self.last_frame = json.loads(frame)  # parsed once per idle check, not per frame
        return frame is not None and frame.get("stage") in TERMINAL_STAGES

    async def _watch(self) -> None:
        """One timer per socket: the credentials re-check every `recheck_seconds`, and while the
        run has not ended, a ledger read once nothing live came for `idle_seconds`. Reads that
        find nothing space out (doubling, up to IDLE_BACKOFF × idle_seconds) until a frame comes:
        a live-paced run that is quiet between bars costs a few reads a minute, not twelve."""
        inf = float("inf")
        now = time.monotonic()
        next_check = now + self.recheck_seconds if self.recheck_seconds > 0 else inf
        catch_up = self.idle_seconds > 0
        wait, last_read = self.idle_seconds, now
        while not self.closing:
            if catch_up and self.last_heard > last_read:
                wait = self.idle_seconds  # frames came live since the last read
            idle_due = max(self.last_heard, last_read) + wait if catch_up else inf
            wake = min(next_check, idle_due)
            if wake == inf:
                return
            await asyncio.sleep(max(0.0, wake - time.monotonic()))
            if self.closing:
                return
            now = time.monotonic()
            if now >= next_check:
                next_check = now + self.recheck_seconds
                try:
                    allowed = await _still_allowed(self.scope)
                except DatabaseError as exc:  # a database outage is no reason to end a socket
                    log.warning("ws/paper/%s: credentials re-check failed (%s); next in %.0f s",
                                self.run_id, exc, self.recheck_seconds)
                    allowed = True
                if not allowed:
                    await self._end(CLOSE_NOT_AUTHENTICATED, "not authenticated any more: the token was revoked "
                                    "or expired, or the user deactivated or logged out")
                    return
            if catch_up and now - max(self.last_heard, last_read) >= wait:
                last_read = time.monotonic()
                found = await self._catch_up()
                if found is None:
                    catch_up = False
                else:
                    wait = self.idle_seconds if found else min(wait * 2, self.idle_seconds * IDLE_BACKOFF)

    def _watch_ended(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("ws/paper/%s: the socket's timer failed; no more re-checks or idle reads",
                      getattr(self, "run_id", "?"), exc_info=task.exception())

    async def _catch_up(self) -> bool | None:
        """Send the frames stored after the last one sent. Returns whether there were any, or
        None once the run has ended (its terminal frame sent): nothing more to wait for."""
        if self._ended():
            return None
        if self.follower is not None and not self.follower.done():
            return False  # the ledger follower reads every second already
        # A reconnecting client (?after_seq=) may already have the terminal frame: read the
        # last frame it has too, to know whether to keep watching.
        known = self.last_seq if self.last_frame is None and self.last_seq else None
        try:
            frames = await _frames_between(self.run_id, self.last_seq - (1 if known else 0), 2**62)
        except DatabaseError as exc:
            log.warning("ws/paper/%s: ledger read failed (%s)", self.run_id, exc)
            return False
        if known and frames and frames[0].get("seq") == known:
            self.last_frame = frames.pop(0)
        if frames:
            log.info("ws/paper/%s: %d frame(s) stored but not delivered live; sent from the ledger",
                     self.run_id, len(frames))
        await self._send_stored(frames)
        return None if self._ended() else bool(frames)

    async def _send_stored(self, frames: list[dict]) -> None:
        # The live path, the ledger follower and the idle catch-up can interleave: a frame goes
        # out only if it is newer than the last one sent, and last_seq moves before the send yields.
        for frame in frames:
            seq = frame.get("seq", 0)
            if (seq <= self.last_seq and self.last_seq) or self.closing:
                continue
            self.last_seq = max(self.last_seq, seq)
            self.last_frame = frame
            await self.send_json(frame)

    async def _end(self, code: int, message: str) -> None:
        """Close an accepted socket: no frame after the error frame."""
        if self.closing:
            return
        self.closing = True
        await self._leave()
        await self.send_json(error_frame(code, message))
        await self.close(code=code)

    async def disconnect(self, code: int) -> None:
        self.closing = True
        for task in (self.follower, self.watcher):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        await self._leave()

    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        if self.closing:
            return  # closed (its error frame sent): nothing more goes out
        text = text_data or ""
        # A character is at most 4 bytes: only text that might be too big is encoded to measure it.
        size = len(bytes_data or b"") + (len(text) if len(text) * 4 <= MAX_CLIENT_MESSAGE
                                          else len(text.encode("utf-8", "surrogatepass")))
        if size > MAX_CLIENT_MESSAGE:
            await self._end(CLOSE_TOO_BIG, f"client message over {MAX_CLIENT_MESSAGE} bytes")
            return
        self.client_messages = getattr(self, "client_messages", 0) + 1
        if self.client_messages > MAX_CLIENT_MESSAGES:
            await self._end(CLOSE_POLICY, f"more than {MAX_CLIENT_MESSAGES} client messages: "
                            "this socket only sends frames")
            return
        # Read-only: nothing a client sends is parsed, stored or acted on.
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
        if self.closing:
            return
        self.last_heard = time.monotonic()
        first = next((seq for seq, _ in event["frames"] if seq > self.last_seq), None)
        if first is not None and first > self.last_seq + 1 and self.last_seq:
            # A gap: frames published while the channel layer was down (a Redis restart) never
            # arrived. They are in the ledger: send them first, so the client misses nothing.
            await self._send_stored(await _frames_between(self.run_id, self.last_seq, first))
        for seq, text in event["frames"]:
            if seq <= self.last_seq or self.closing:
                continue  # already sent from the stored backlog
            self.last_seq = seq
            self.last_frame = text
            await self.send(text_data=text)


class NoRouteConsumer(Refusal):
    """Any other ws/ path (an unknown route, a run id past the route's 40 characters): accepted and
    closed with 4404, instead of the router's "No route found" exception (a traceback in the
    server log)."""

    code = CLOSE_NOT_FOUND
    message = "no such socket: the frames socket is ws/paper/<paper_run_id>"


class ForeignOriginConsumer(Refusal):
    """A socket whose Origin is not an allowed host (config/wsauth.py, OriginPolicy): closed with
    4403 before any session or token lookup."""

    code = CLOSE_FORBIDDEN_ORIGIN
    message = "origin not allowed: open the socket from this site's pages"
