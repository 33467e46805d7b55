"""The session actor on Dramatiq's StubBroker with a real Worker: enqueue on commit, run, finish."""
from __future__ import annotations

from datetime import date

import dramatiq
import pytest

from bots.services import backtest_run, bot_create
from ledger.models import PaperTradingRun
from paper.actors import run_paper_session
from paper.sessions import SessionRequest, session_start

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def worker(stub_broker):
    worker = dramatiq.Worker(stub_broker, worker_timeout=50, worker_threads=2)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def ready_bot(sample_data):
    bot = bot_create(name="actor", strategy="sma_crossover", params={"fast": 3, "slow": 8},
                     symbols=["ETH-USD"], timeframe="1d")
    backtest_run(bot=bot, start=date(2022, 1, 1), end=date(2023, 12, 31))
    return bot


def test_starting_a_session_enqueues_the_actor_after_commit(stub_broker, ready_bot):
    from django.db import transaction

    with transaction.atomic():
        run = session_start(bot=ready_bot, request=SessionRequest(starting_cash=1000, duration_minutes=5))
        assert stub_broker.queues["paper"].qsize() == 0  # nothing is sent before the commit
    assert stub_broker.queues["paper"].qsize() == 1
    message = stub_broker.queues["paper"].get_nowait()
    assert dramatiq.Message.decode(message).args == (run.id,)


def test_a_rolled_back_start_enqueues_nothing(stub_broker, ready_bot):
    from django.db import transaction

    with pytest.raises(RuntimeError), transaction.atomic():
        session_start(bot=ready_bot, request=SessionRequest(starting_cash=1000, duration_minutes=5))
        raise RuntimeError("the request failed after the start")
    assert stub_broker.queues["paper"].qsize() == 0
    assert not PaperTradingRun.objects.exists()


def test_the_worker_runs_the_session_to_its_end(stub_broker, worker, ready_bot, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        run = session_start(bot=ready_bot, request=SessionRequest(
            starting_cash=100_000, duration_minutes=30, pace=60_000, seed=2))
    stub_broker.join("paper", timeout=30_000)
    worker.join()
    run.refresh_from_db()
    assert run.status == "success" and run.bars_processed == 30
    assert run.total_pnl is not None and run.num_fills == run.fills.count()


def test_a_redelivered_message_for_a_finished_session_does_nothing(stub_broker, worker, ready_bot,
                                                                 django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        run = session_start(bot=ready_bot, request=SessionRequest(
            starting_cash=100_000, duration_minutes=10, pace=60_000, seed=2))
    stub_broker.join("paper", timeout=30_000)
    before = PaperTradingRun.objects.get(pk=run.pk)
    run_paper_session.send(run.id)  # at-least-once delivery: the same message again
    stub_broker.join("paper", timeout=30_000)
    worker.join()
    after = PaperTradingRun.objects.get(pk=run.pk)
    assert (after.status, after.num_fills, after.ended_at) == (before.status, before.num_fills, before.ended_at)
    assert after.frames.filter(stage="session.started").count() == 1


def test_the_delayed_artifacts_actor_writes_the_folder_from_the_ledger(stub_broker, worker, ready_bot, settings,
                                                                       django_capture_on_commit_callbacks):
    import json

    from paper import artifact_contract as c

    settings.PAPER_ARTIFACTS_DELAY_MS = 50
    with django_capture_on_commit_callbacks(execute=True):
        run = session_start(bot=ready_bot, request=SessionRequest(
            starting_cash=100_000, duration_minutes=20, pace=60_000, seed=4))
    stub_broker.join("paper", timeout=30_000)
    folder = settings.OUTPUTS_DIR / "paper_sessions" / run.id
    for _ in range(200):  # the delayed message lands on the delay queue first
        if (folder / c.REPORT).exists():
            break
        import time

        time.sleep(0.05)
        stub_broker.join("paper", timeout=30_000)
    worker.join()
    assert all((folder / name).exists() for name in c.CANONICAL_FILES)
    assert json.loads((folder / c.STATUS).read_text())["status"] == "success"
