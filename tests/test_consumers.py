"""The frames socket with a real channel layer: auth, origin, backlog then live, bad input."""
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


async def test_it_refuses_anonymous_clients():
    run_id, _ = await make_run()
    ws = connect(f"/ws/paper/{run_id}", [(b"origin", b"http://localhost")])
    connected, code = await ws.connect()
    assert not connected and code == 4401


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


async def test_a_foreign_origin_is_refused():
    run_id, token = await make_run()
    ws = connect(f"/ws/paper/{run_id}?token={token}", [(b"origin", b"http://evil.example")])
    connected, _ = await ws.connect()
    assert not connected


async def test_a_session_cookie_socket_must_send_an_allowed_origin():
    run_id, _ = await make_run()
    from django.test import Client

    client = Client()
    await database_sync_to_async(client.login)(username="op", password="pw-123456")
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    no_origin = connect(f"/ws/paper/{run_id}", [(b"cookie", cookie)])
    connected, code = await no_origin.connect()
    assert not connected and code == 4403
    ok = connect(f"/ws/paper/{run_id}", [(b"cookie", cookie), (b"origin", b"http://localhost:8000")])
    connected, _ = await ok.connect()
    assert connected
    await ok.disconnect()


async def test_an_unknown_run_is_refused():
    _, token = await make_run()
    ws = connect(f"/ws/paper/20990101T000000Z-deadbeef?token={token}")
    connected, code = await ws.connect()
    assert not connected and code == 4404


async def test_an_oversized_client_message_closes_the_socket():
    run_id, token = await make_run(n_frames=0)
    ws = connect(f"/ws/paper/{run_id}?token={token}")
    connected, _ = await ws.connect()
    assert connected
    await ws.send_to(text_data="x" * 10_000)
    out = await ws.receive_output(timeout=2)
    assert out["type"] == "websocket.close" and out["code"] == 1009
