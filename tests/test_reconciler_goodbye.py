"""An open socket hears the reconciler's goodbye (issue 13, finding 3: the reconciler stored the
goodbye of a session no worker was running, but never published it, so open sockets stayed at
an earlier seq until they reconnected).

Real channel layer (in memory, on the test's event loop) and a real consumer; the reconciler
runs in a thread as a worker's reconcile loop does.
"""
from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.utils import timezone

from config.asgi import application
from ledger.models import PaperTradingRun, RunStatus
from ledger.services import frames_record, run_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@database_sync_to_async
def stopped_run_with_no_worker():
    from bots.services import bot_create
    from paper.sessions import sessions_stop
    from paper.tokens import api_token_create

    user = User.objects.create_user("op", password="pw-123456")
    _, token = api_token_create(user=user)
    bot = bot_create(name="b", strategy="buy_and_hold", symbols=["ETH-USD"], timeframe="1d")
    run = run_create(bot=bot, starting_cash=100_000, symbol="ETH-USD", timeframe="1d", data_source="synthetic",
                     seed=1, config_snapshot={}, config_hash="x")
    PaperTradingRun.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, worker_id="gone:1:1")
    now = timezone.now().isoformat()
    frames_record(run=run, frames=[{"task_id": run.id, "stage": "session.started", "message": "started",
                                    "timestamp": now, "seq": 1, "equity": 100_000.0, "positions": {}}])
    sessions_stop(run_ids=[run.id], reason="kill_switch: drill")  # no worker hears it
    PaperTradingRun.objects.filter(pk=run.pk).update(ended_at=timezone.now() - timedelta(minutes=5))
    return run.id, token


def _reconcile() -> dict:
    from django.db import connections

    from paper.sessions import sessions_reconcile

    try:
        return sessions_reconcile()
    finally:
        connections.close_all()  # this thread's connection back to the pool (PostgreSQL)


async def test_an_open_socket_receives_the_goodbye_the_reconciler_writes(stub_broker):
    run_id, token = await stopped_run_with_no_worker()
    ws = WebsocketCommunicator(application, f"/ws/paper/{run_id}?token={token}")
    connected, _ = await ws.connect()
    assert connected
    assert (await ws.receive_json_from(timeout=2))["seq"] == 1
    report = await asyncio.to_thread(_reconcile)
    assert report["closed"] == [run_id]
    goodbye = await ws.receive_json_from(timeout=1)  # live, not a second-long ledger poll later
    assert (goodbye["seq"], goodbye["stage"], goodbye["incident"]) == (2, "session.stopped", "no_epilogue")
    assert goodbye["status_reason"] == "kill_switch: drill"
    await ws.disconnect()
