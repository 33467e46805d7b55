"""The frames socket with a real channel layer: auth, origin, backlog then live, bad input, close
codes a client can tell apart, credentials re-checked while open, idle catch-up from the ledger."""
from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.utils import timezone

from config.asgi import application
from ledger.services import frames_record, run_create
from paper.frames import frames_publish

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


def frame(run_id: str, seq: int, stage: str = "bar.received") -> dict:
    return {"task_id": run_id, "stage": stage, "message": f"frame {seq}", "timestamp": timezone.now().isoformat(),
            "seq": seq, "equity": 100_000.0 + seq, "positions": {"ETH-USD": {"qty": 1.0}}}


@database_sync_to_async
def make_run(n_frames: int = 3):
    from bots.services import bot_create
    from paper.tokens import api_token_create

    user = User.objects.create_user("op", password="pw-123456")
    _, token = api_token_create(user=user)
    bot = bot_create(name="b", strategy="buy_and_hold", symbols=["ETH-USD"], timeframe="1d")
    run = run_create(bot=bot, starting_cash=100_000, symbol="ETH-USD", timeframe="1d", data_source="synthetic",
                     seed=1, config_snapshot={}, config_hash="x")
    frames_record(run=run, frames=[frame(run.id, i) for i in range(1, n_frames + 1)])
    return run.id, token


def connect(path: str, headers: list | None = None) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, path, headers=headers or [])


async def refusal(ws: WebsocketCommunicator, timeout: float = 2) -> tuple[int, dict]:
    """A refused socket: accepted (not an HTTP 403 before the upgrade), one error frame, then the
    close. Returns (close code, error frame)."""
    connected, _ = await ws.connect()
    assert connected, "refused before the handshake (HTTP 403): the client cannot tell why"
    return await closed(ws, timeout)


async def closed(ws: WebsocketCommunicator, timeout: float = 2) -> tuple[int, dict]:
    """The error frame and the close that end an open socket."""
    error = await ws.receive_json_from(timeout=timeout)
    out = await ws.receive_output(timeout=timeout)
    assert out["type"] == "websocket.close", out
    assert error["stage"] == "error" and error["code"] == out["code"] and error["message"]
    return out["code"], error


async def cookie_for(username: str = "op", password: str = "pw-123456") -> bytes:
    from django.test import Client

    client = Client()
    assert await database_sync_to_async(client.login)(username=username, password=password)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def test_it_refuses_anonymous_clients():
    run_id, _ = await make_run()
    ws = connect(f"/ws/paper/{run_id}", [(b"origin", b"http://localhost")])
    assert (await refusal(ws))[0] == 4401


async def test_an_unknown_token_is_refused_with_4401():
    run_id, _ = await make_run()
    assert (await refusal(connect(f"/ws/paper/{run_id}?token=pt_nonsense")))[0] == 4401


async def test_it_sends_the_backlog_then_live_frames_in_order():
    run_id, token = await make_run(n_frames=3)
    ws = connect(f"/ws/paper/{run_id}?token={token}")
    connected, _ = await ws.connect()
    assert connected
    backlog = [await ws.receive_json_from() for _ in range(3)]
    assert [f["seq"] for f in backlog] == [1, 2, 3]
    assert all({"task_id", "stage", "message", "timestamp", "equity", "positions"} <= set(f) for f in backlog)
    # A live frame published from a worker thread, plus a duplicate of one already sent.
    await asyncio.to_thread(frames_publish, run_id, [frame(run_id, 3), frame(run_id, 4, "order.filled")])
    live = await ws.receive_json_from(timeout=2)
    assert (live["seq"], live["stage"]) == (4, "order.filled")
    assert await ws.receive_nothing(timeout=0.2)
    await ws.disconnect()


@pytest.mark.parametrize("after_seq,expected", [("3", [4, 5, 6]), ("0", [1, 2, 3, 4, 5, 6]), ("6", []),
                                                ("junk", [1, 2, 3, 4, 5, 6])])
async def test_a_reconnecting_client_gets_exactly_the_frames_after_its_last_seq(settings, after_seq, expected):
    settings.PAPER_FRAME_BACKLOG = 200
    run_id, token = await make_run(n_frames=6)
    ws = connect(f"/ws/paper/{run_id}?token={token}&after_seq={after_seq}")
    connected, _ = await ws.connect()
    assert connected
    got = [(await ws.receive_json_from())["seq"] for _ in expected]
    assert got == expected
    assert await ws.receive_nothing(timeout=0.2)
    # Live frames at or below what the client already has are not sent again.
    await asyncio.to_thread(frames_publish, run_id, [frame(run_id, 6), frame(run_id, 7)])
    assert (await ws.receive_json_from(timeout=2))["seq"] == 7
    await ws.disconnect()


async def test_frames_lost_in_transit_are_filled_in_from_the_ledger():
    """A Redis restart drops live frames; the next live message shows the gap and the consumer
    sends the missing frames from the ledger first."""
    run_id, token = await make_run(n_frames=2)
    ws = connect(f"/ws/paper/{run_id}?token={token}")
    connected, _ = await ws.connect()
    assert connected
    assert [(await ws.receive_json_from())["seq"] for _ in range(2)] == [1, 2]
    lost = [frame(run_id, 3), frame(run_id, 4, "order.filled")]
    await database_sync_to_async(_store)(run_id, lost)  # stored, but never published live
    await asyncio.to_thread(frames_publish, run_id, [frame(run_id, 5)])
    got = [await ws.receive_json_from(timeout=2) for _ in range(3)]
    assert [(f["seq"], f["stage"]) for f in got] == [(3, "bar.received"), (4, "order.filled"), (5, "bar.received")]
    assert await ws.receive_nothing(timeout=0.2)
    await ws.disconnect()


def _store(run_id: str, frames: list[dict]) -> None:
    from ledger.models import PaperTradingRun

    frames_record(run=PaperTradingRun.objects.get(pk=run_id), frames=frames)


async def test_a_bearer_header_works_without_origin():
    run_id, token = await make_run(n_frames=1)
    ws = connect(f"/ws/paper/{run_id}", [(b"authorization", f"Bearer {token}".encode())])
    connected, _ = await ws.connect()
    assert connected
    assert (await ws.receive_json_from())["seq"] == 1
    await ws.disconnect()


@pytest.mark.parametrize("origin", [b"http://evil.example", b"http://localhost.evil.example", b"null",
                                    b"http://[::1", b"not a url"])
async def test_a_foreign_origin_is_refused_with_4403_and_no_frame(origin):
    run_id, token = await make_run()
    cookie = await cookie_for()
    for headers in ([(b"origin", origin)], [(b"origin", origin), (b"cookie", cookie)]):
        ws = connect(f"/ws/paper/{run_id}?token={token}", headers)
        code, error = await refusal(ws)
        assert code == 4403 and "origin" in error["message"]
        assert "seq" not in error  # the run's frames never reach a foreign page


async def test_a_session_cookie_socket_must_send_an_allowed_origin():
    run_id, _ = await make_run()
    cookie = await cookie_for()
    no_origin = connect(f"/ws/paper/{run_id}", [(b"cookie", cookie)])
    assert (await refusal(no_origin))[0] == 4403
    ok = connect(f"/ws/paper/{run_id}", [(b"cookie", cookie), (b"origin", b"http://localhost:8000")])
    connected, _ = await ok.connect()
    assert connected
    assert (await ok.receive_json_from())["seq"] == 1
    await ok.disconnect()


async def test_an_unknown_run_is_refused():
    _, token = await make_run()
    ws = connect(f"/ws/paper/20990101T000000Z-deadbeef?token={token}")
    code, error = await refusal(ws)
    assert code == 4404 and "20990101T000000Z-deadbeef" in error["message"]


async def test_an_unknown_route_is_refused_with_4404():
    _, token = await make_run()
    assert (await refusal(connect(f"/ws/nowhere?token={token}")))[0] == 4404
    assert (await refusal(connect("/ws/paper/" + "x" * 100)))[0] == 4404


async def test_the_refusals_are_told_apart():
    """No token, an unknown run, a foreign origin: three codes, not one HTTP 403 for all."""
    run_id, token = await make_run()
    codes = [(await refusal(connect(path, headers)))[0] for path, headers in [
        (f"/ws/paper/{run_id}", []),
        ("/ws/paper/no-such-run?token=" + token, []),
        (f"/ws/paper/{run_id}?token={token}", [(b"origin", b"http://evil.example")]),
    ]]
    assert codes == [4401, 4404, 4403]


async def test_every_close_code_is_one_daphne_lets_an_application_send():
    """autobahn only lets an application close with 1000 or 3000-4999 (1008/1009 became 1011 and
    a traceback); each code is in the module docstring."""
    from paper import consumers

    codes = {name: value for name, value in vars(consumers).items() if name.startswith("CLOSE_")}
    assert set(codes.values()) == {4401, 4403, 4404, 4008, 4009}
    for name, value in codes.items():
        assert 4000 <= value <= 4999, name
        assert f"  {value}  " in consumers.__doc__, name


async def test_an_oversized_client_message_closes_the_socket():
    run_id, token = await make_run(n_frames=0)
    ws = connect(f"/ws/paper/{run_id}?token={token}")
    connected, _ = await ws.connect()
    assert connected
    await ws.send_to(text_data="x" * 10_000)
    assert (await closed(ws))[0] == 4009


async def test_a_client_that_keeps_talking_is_closed_with_4008():
    from paper.consumers import MAX_CLIENT_MESSAGES

    run_id, token = await make_run(n_frames=0)
    ws = connect(f"/ws/paper/{run_id}?token={token}")
    assert (await ws.connect())[0]
    for _ in range(MAX_CLIENT_MESSAGES):
        await ws.send_to(text_data="hi")
        assert (await ws.receive_json_from(timeout=2))["stage"] == "error"
    await ws.send_to(text_data="hi")
    assert (await closed(ws))[0] == 4008


# --- credentials re-checked while the socket is open -----------------------------------------------

@pytest.fixture
def fast_recheck(settings):
    settings.PAPER_WS_AUTH_RECHECK_SECONDS = 0.2
    settings.PAPER_WS_IDLE_SECONDS = 0  # only the credentials timer


async def test_a_revoked_token_ends_its_open_socket(fast_recheck):
    from paper.models import ApiToken
    from paper.tokens import api_token_revoke

    run_id, token = await make_run(n_frames=1)
    ws = connect(f"/ws/paper/{run_id}?token={token}")
    assert (await ws.connect())[0]
    assert (await ws.receive_json_from())["seq"] == 1
    assert await ws.receive_nothing(timeout=0.5)  # re-checked, still valid: stays open
    await database_sync_to_async(lambda: api_token_revoke(token=ApiToken.objects.get()))()
    code, error = await closed(ws)
    assert code == 4401 and "revoked" in error["message"]
    # Nothing after the close, even a live frame of its run.
    await asyncio.to_thread(frames_publish, run_id, [frame(run_id, 2)])
    assert await ws.receive_nothing(timeout=0.3)


async def test_a_token_socket_ends_when_its_user_is_deactivated(fast_recheck):
    run_id, token = await make_run(n_frames=0)
    ws = connect(f"/ws/paper/{run_id}", [(b"authorization", f"Bearer {token}".encode())])
    assert (await ws.connect())[0]
    await database_sync_to_async(User.objects.filter(username="op").update)(is_active=False)
    assert (await closed(ws))[0] == 4401


async def test_an_expired_token_ends_its_open_socket(fast_recheck, monkeypatch):
    """Expiry is api_token_verify's to decide (as at the handshake): once it stops answering the
    token's user, the socket ends."""
    import paper.tokens

    run_id, token = await make_run(n_frames=0)
    ws = connect(f"/ws/paper/{run_id}?token={token}")
    assert (await ws.connect())[0]
    assert await ws.receive_nothing(timeout=0.4)
    monkeypatch.setattr(paper.tokens, "api_token_verify", lambda raw: None)  # "expired"
    assert (await closed(ws))[0] == 4401


async def test_a_cookie_socket_ends_when_its_user_is_deactivated_or_logs_out(fast_recheck):
    from django.contrib.sessions.models import Session

    run_id, _ = await make_run(n_frames=0)
    origin = (b"origin", b"http://localhost:8000")
    ws = connect(f"/ws/paper/{run_id}", [(b"cookie", await cookie_for()), origin])
    assert (await ws.connect())[0]
    assert await ws.receive_nothing(timeout=0.5)
    await database_sync_to_async(User.objects.filter(username="op").update)(is_active=False)
    assert (await closed(ws))[0] == 4401
    # An inactive user's session no longer authenticates at all.
    assert (await refusal(connect(f"/ws/paper/{run_id}", [(b"cookie", await _cookie_of_inactive()), origin])))[0] == 4401

    await database_sync_to_async(User.objects.filter(username="op").update)(is_active=True)
    ws = connect(f"/ws/paper/{run_id}", [(b"cookie", await cookie_for()), origin])
    assert (await ws.connect())[0]
    assert await ws.receive_nothing(timeout=0.5)
    await database_sync_to_async(lambda: Session.objects.all().delete())()  # logged out
    assert (await closed(ws))[0] == 4401


@database_sync_to_async
def _cookie_of_inactive() -> bytes:
    from django.test import Client

    client = Client()
    client.force_login(User.objects.get(username="op"))  # a session made before the deactivation
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def test_credentials_are_not_read_per_frame(settings, monkeypatch):
    """The fan-out path reads no database: 200 live frames, one credentials check at most."""
    import paper.consumers

    settings.PAPER_WS_AUTH_RECHECK_SECONDS = 60
    settings.PAPER_WS_IDLE_SECONDS = 0
    calls = []
    real = paper.consumers._still_allowed
    monkeypatch.setattr(paper.consumers, "_still_allowed", lambda scope: calls.append(1) or real(scope))
    run_id, token = await make_run(n_frames=0)
    ws = connect(f"/ws/paper/{run_id}?token={token}")
    assert (await ws.connect())[0]
    for start in range(1, 201, 20):
        await asyncio.to_thread(frames_publish, run_id, [frame(run_id, s) for s in range(start, start + 20)])
    assert [(await ws.receive_json_from(timeout=2))["seq"] for _ in range(200)] == list(range(1, 201))
    assert calls == []
    await ws.disconnect()


# --- read-only: nothing a client sends changes anything --------------------------------------------

async def test_client_messages_change_nothing(settings):
    settings.PAPER_WS_IDLE_SECONDS = 0.2
    from ledger.models import PaperFrame, PaperTradingRun

    run_id, token = await make_run(n_frames=1)
    status = await database_sync_to_async(lambda: PaperTradingRun.objects.get(pk=run_id).status)()
    watcher = connect(f"/ws/paper/{run_id}?token={token}")
    talker = connect(f"/ws/paper/{run_id}?token={token}")
    for ws in (watcher, talker):
        assert (await ws.connect())[0]
        assert (await ws.receive_json_from())["seq"] == 1
    for message in [{"action": "stop"}, {"type": "paper.frames", "frames": [[2, "{}"]]},
                    frame(run_id, 2, "session.stopped"), {"stage": "kill_switch", "latched": True}]:
        await talker.send_json_to(message)
        reply = await talker.receive_json_from()
        assert reply == {"stage": "error", "message": "this socket only sends frames"}
    assert await watcher.receive_nothing(timeout=0.5)  # no frame reached the other socket
    assert await database_sync_to_async(lambda: list(PaperFrame.objects.values_list("seq", flat=True)))() == [1]
    assert await database_sync_to_async(lambda: PaperTradingRun.objects.get(pk=run_id).status)() == status
    for ws in (watcher, talker):
        await ws.disconnect()


# --- idle catch-up: frames stored but never published ----------------------------------------------

async def test_an_idle_socket_gets_frames_stored_while_live_delivery_was_down(settings):
    """A goodbye frame stored during a Redis outage (its publish lost) reaches the socket without a
    later live frame; after the terminal frame the socket stops reading the ledger."""
    import paper.consumers

    settings.PAPER_WS_IDLE_SECONDS = 0.3
    run_id, token = await make_run(n_frames=2)
    ws = connect(f"/ws/paper/{run_id}?token={token}")
    assert (await ws.connect())[0]
    assert [(await ws.receive_json_from())["seq"] for _ in range(2)] == [1, 2]
    await database_sync_to_async(_store)(run_id, [frame(run_id, 3, "order.filled")])  # never published
    assert (await ws.receive_json_from(timeout=2))["seq"] == 3
    await database_sync_to_async(_store)(run_id, [frame(run_id, 4, "equity.update"),
                                                  frame(run_id, 5, "session.completed")])
    got = [await ws.receive_json_from(timeout=2) for _ in range(2)]
    assert [(f["seq"], f["stage"]) for f in got] == [(4, "equity.update"), (5, "session.completed")]
    reads = []
    real = paper.consumers._frames_between
    paper.consumers._frames_between = lambda *a: reads.append(a) or real(*a)
    try:
        assert await ws.receive_nothing(timeout=1.0)
        assert reads == []  # the run has ended: no more ledger reads
    finally:
        paper.consumers._frames_between = real
    await ws.disconnect()


async def test_an_idle_catch_up_keeps_frames_in_order_with_live_ones(settings):
    settings.PAPER_WS_IDLE_SECONDS = 0.3
    run_id, token = await make_run(n_frames=1)
    ws = connect(f"/ws/paper/{run_id}?token={token}")
    assert (await ws.connect())[0]
    assert (await ws.receive_json_from())["seq"] == 1
    await database_sync_to_async(_store)(run_id, [frame(run_id, 2), frame(run_id, 3)])
    assert [(await ws.receive_json_from(timeout=2))["seq"] for _ in range(2)] == [2, 3]
    # The same frames arriving live later are not sent twice; the next new one is.
    await asyncio.to_thread(frames_publish, run_id, [frame(run_id, 2), frame(run_id, 3), frame(run_id, 4)])
    assert (await ws.receive_json_from(timeout=2))["seq"] == 4
    assert await ws.receive_nothing(timeout=0.2)
    await ws.disconnect()


async def test_no_ledger_reads_while_frames_flow(settings, monkeypatch):
    import paper.consumers

    settings.PAPER_WS_IDLE_SECONDS = 0.5
    run_id, token = await make_run(n_frames=0)
    ws = connect(f"/ws/paper/{run_id}?token={token}")
    assert (await ws.connect())[0]
    reads = []
    real = paper.consumers._frames_between
    monkeypatch.setattr(paper.consumers, "_frames_between", lambda *a: reads.append(a) or real(*a))
    for seq in range(1, 16):  # a frame every 0.1 s for 1.5 s: never idle for 0.5 s
        await asyncio.to_thread(frames_publish, run_id, [frame(run_id, seq)])
        assert (await ws.receive_json_from(timeout=2))["seq"] == seq
        await asyncio.sleep(0.1)
    assert reads == []
    await asyncio.sleep(0.8)  # now idle: one read per interval
    assert 1 <= len(reads) <= 2
    await ws.disconnect()


async def test_a_client_reconnecting_after_the_terminal_frame_does_not_poll(settings, monkeypatch):
    import paper.consumers

    settings.PAPER_WS_IDLE_SECONDS = 0.2
    run_id, token = await make_run(n_frames=2)
    await database_sync_to_async(_store)(run_id, [frame(run_id, 3, "session.stopped")])
    reads = []
    real = paper.consumers._frames_between
    monkeypatch.setattr(paper.consumers, "_frames_between", lambda *a: reads.append(a) or real(*a))
    ws = connect(f"/ws/paper/{run_id}?token={token}&after_seq=3")
    assert (await ws.connect())[0]
    assert await ws.receive_nothing(timeout=1.0)
    assert len(reads) == 1  # one read learns that seq 3 ended the run, then none
    await ws.disconnect()


async def test_idle_reads_that_find_nothing_space_out_until_a_frame_comes(settings, monkeypatch):
    import paper.consumers

    settings.PAPER_WS_IDLE_SECONDS = 0.2
    run_id, token = await make_run(n_frames=1)
    ws = connect(f"/ws/paper/{run_id}?token={token}")
    assert (await ws.connect())[0]
    assert (await ws.receive_json_from())["seq"] == 1
    reads = []
    real = paper.consumers._frames_between
    monkeypatch.setattr(paper.consumers, "_frames_between", lambda *a: reads.append(a) or real(*a))
    await asyncio.sleep(2.0)  # every 0.2 s would be 10 reads; 0.2, 0.4, 0.8, 0.8 apart: 3 or 4
    assert 2 <= len(reads) <= 5, len(reads)
    live = [frame(run_id, 2)]
    await database_sync_to_async(_store)(run_id, live)  # stored, then published, as a session does
    await asyncio.to_thread(frames_publish, run_id, live)  # live again: back to 0.2 s
    assert (await ws.receive_json_from(timeout=2))["seq"] == 2
    before = len(reads)
    await database_sync_to_async(_store)(run_id, [frame(run_id, 3)])  # stored, publish lost
    assert (await ws.receive_json_from(timeout=1.5))["seq"] == 3  # (the timer may wake late once)
    assert before + 1 <= len(reads) <= before + 2
    await ws.disconnect()
