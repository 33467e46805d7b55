"""Session supervision: the lease, the reconciler, hand-off at worker shutdown, database outages.

The real-process versions (SIGKILL a worker, stop Redis, restart PostgreSQL, kill daphne) are in
tests/e2e/test_faults.py; these pin each rule down at the service layer.
"""
from __future__ import annotations

import threading
import time
from datetime import date, timedelta

import dramatiq
import pytest
from django.db import OperationalError
from django.utils import timezone

from bots.services import backtest_run, bot_create
from ledger import services as ledger
from ledger.models import PaperFill, PaperFrame, PaperOrder, PaperTradingRun
from paper import halts
from paper.sessions import SessionRequest, session_execute, session_start, sessions_reconcile
from tests.test_sessions import _stop_when_persisting

pytestmark = pytest.mark.django_db(transaction=True)

FAST = dict(pace=60_000.0)


@pytest.fixture
def ready_bot(sample_data):
    bot = bot_create(name="supervised", strategy="sma_crossover", params={"fast": 3, "slow": 8},
                     symbols=["ETH-USD"], timeframe="1d", risk={"max_drawdown_pct": 90})
    backtest_run(bot=bot, start=date(2022, 1, 1), end=date(2023, 12, 31))
    return bot


def start(bot, **kw):
    return session_start(bot=bot, request=SessionRequest(**{"starting_cash": 100_000, "duration_minutes": 60,
                                                            "seed": 5, **FAST, **kw}))


def fills(run) -> list[tuple]:
    return list(PaperFill.objects.filter(paper_run=run).order_by("fill_id").values_list("fill_id", "qty", "price"))


def orders(run) -> list[tuple]:
    return list(PaperOrder.objects.filter(paper_run=run).order_by("order_id")
                .values_list("order_id", "status", "filled_qty", "reason", "updated_at"))


def open_orders(run) -> list[str]:
    return [o[0] for o in orders(run) if o[1] in ("new", "accepted", "partially_filled")]


def stages(run) -> list[str]:
    return list(PaperFrame.objects.filter(paper_run=run).order_by("seq").values_list("stage", flat=True))


def age(run, seconds: float) -> None:
    PaperTradingRun.objects.filter(pk=run.pk).update(updated_at=timezone.now() - timedelta(seconds=seconds))


def queued_ids(broker, queue: str = "paper") -> list[str]:
    q = broker.queues[queue]
    return [dramatiq.Message.decode(m).args[0] for m in list(q.queue)]


@pytest.fixture
def draining_cleared():
    yield
    halts.draining_reset()


def die_after(monkeypatch, bar: int) -> None:
    """The worker dies (SIGKILL-like: nothing more written) right after persisting `bar`."""
    import paper.sessions as sessions

    real = sessions._SessionLoop.persist

    def persist(self, *, bars_processed):
        real(self, bars_processed=bars_processed)
        if bars_processed == bar:
            monkeypatch.setattr(sessions._SessionLoop, "persist", real)
            raise SystemExit("worker killed")

    monkeypatch.setattr(sessions._SessionLoop, "persist", persist)


# --- the lease --------------------------------------------------------------------------------------

def test_a_worker_that_lost_its_lease_writes_nothing_more(ready_bot, stub_broker):
    run = start(ready_bot)
    PaperTradingRun.objects.filter(pk=run.pk).update(status="running", worker_id="w2")
    with pytest.raises(ledger.LeaseLost):
        ledger.session_bar_persist(run_id=run.id, fills=[], orders=[], equity_point=None, frames=[],
                                   bars_processed=5, ending_equity=1.0, starting_cash=1.0, worker_id="w1")
    assert ledger.run_heartbeat(run_id=run.id, worker_id="w1") == ledger.LEASE_LOST
    assert ledger.run_heartbeat(run_id=run.id, worker_id="w2") == ""
    run.refresh_from_db()
    assert run.bars_processed == 0 and run.worker_id == "w2"


# --- the reconciler ---------------------------------------------------------------------------------

def test_the_reconciler_resumes_a_session_whose_worker_died(ready_bot, stub_broker, monkeypatch, settings):
    reference = start(ready_bot)
    session_execute(reference.id)
    run = start(ready_bot)
    stub_broker.flush_all()
    die_after(monkeypatch, 25)
    with pytest.raises(SystemExit):
        session_execute(run.id, worker_id="dead")
    assert sessions_reconcile() == {"resumed": [], "aborted": [], "requeued": [], "closed": []}  # fresh
    age(run, 20)
    assert sessions_reconcile()["resumed"] == [run.id]
    assert queued_ids(stub_broker) == [run.id]
    assert sessions_reconcile()["resumed"] == []  # done once, not once per reconcile
    run.refresh_from_db()
    assert run.status == "running" and run.worker_id == ""
    assert session_execute(run.id, worker_id="w2") == "success"
    assert fills(run) == fills(reference) and fills(run)
    run.refresh_from_db()
    assert run.num_fills == len(fills(run))
    got = stages(run)
    assert got.index("session.worker_lost") < got.index("session.resumed") < got.index("session.completed")
    seqs = list(PaperFrame.objects.filter(paper_run=run).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    lost = PaperFrame.objects.get(paper_run=run, stage="session.worker_lost").payload
    assert "no heartbeat" in lost["message"] and "dead" in lost["message"] and lost["incident"] == "worker_lost"
    # The runbook's alerts say what happened, though the session ended well.
    from paper.runbook import alerts

    snapshot = alerts(settings.OUTPUTS_DIR / "paper_sessions", now=timezone.now())
    (alert,) = [x for x in snapshot["alerts"] if x["session_id"] == run.id]
    assert alert["code"] == "PAPER_SESSION_INCIDENT" and alert["status"] == "success"
    assert "recovered from 1 incident: no heartbeat for" in alert["message"]


def test_a_session_that_keeps_losing_its_worker_ends_aborted_with_the_reason(ready_bot, stub_broker, settings):
    settings.PAPER_MAX_RESUMES = 2
    run = start(ready_bot)
    PaperTradingRun.objects.filter(pk=run.pk).update(status="running", worker_id="w")
    for _ in range(2):
        age(run, 20)
        assert sessions_reconcile()["resumed"] == [run.id]
    age(run, 20)
    assert sessions_reconcile()["aborted"] == [run.id]
    run.refresh_from_db()
    assert run.status == "aborted" and run.status_reason == "worker_lost: worker lost again after 2 resumes"
    assert stages(run) == ["session.worker_lost", "session.worker_lost", "session.stopped"]


def test_a_session_silent_for_too_long_is_aborted_not_resumed(ready_bot, stub_broker, monkeypatch, settings):
    run = start(ready_bot)
    die_after(monkeypatch, 9)  # with its first order working
    with pytest.raises(SystemExit):
        session_execute(run.id, worker_id="dead")
    assert open_orders(run) != []
    age(run, settings.PAPER_STALE_SECONDS + 5)
    assert sessions_reconcile()["aborted"] == [run.id]
    run.refresh_from_db()
    assert run.status == "aborted" and run.status_reason.startswith("worker_lost: no heartbeat since ")
    # the epilogue no session will write: its orders canceled, its metrics from the ledger
    assert open_orders(run) == [] and run.metrics["bars"] == 9 and run.metrics["num_fills"] == run.num_fills
    assert run.metrics["final_equity"] == pytest.approx(run.ending_equity)
    [canceled] = [o for o in orders(run) if o[1] == "canceled"]
    assert canceled[3] == f"run stopped: {run.status_reason}"


def test_a_session_stopped_while_no_worker_ran_it_gets_its_goodbye_and_its_folder(
        ready_bot, stub_broker, monkeypatch, settings):
    from paper.runbook import alerts, sessions_scan
    from paper.sessions import session_artifacts_write, sessions_stop

    run = start(ready_bot)
    stub_broker.flush_all()
    die_after(monkeypatch, 9)  # its first order is working then
    with pytest.raises(SystemExit):
        session_execute(run.id, worker_id="dead")
    assert sessions_stop(run_ids=[run.id], reason="kill_switch: drill")["stopped"] == [run.id]
    assert sessions_reconcile()["closed"] == []  # a live session would be writing its epilogue now
    PaperTradingRun.objects.filter(pk=run.pk).update(
        ended_at=timezone.now() - timedelta(seconds=settings.PAPER_RESUME_AFTER_SECONDS + 1))
    assert open_orders(run) != []  # its worker died with an order working
    assert sessions_reconcile()["closed"] == [run.id]
    assert sessions_reconcile()["closed"] == []  # once
    run.refresh_from_db()
    assert (run.status, run.status_reason, run.bars_processed) == ("aborted", "kill_switch: drill", 9)
    goodbye = PaperFrame.objects.filter(paper_run=run).order_by("seq").last()
    assert goodbye.stage == "session.stopped" and goodbye.payload["incident"] == "no_epilogue"
    assert "ledger as of bar 9 stands: 1 open order(s) canceled" in goodbye.message
    assert goodbye.payload["status_reason"] == "kill_switch: drill"
    seqs = list(PaperFrame.objects.filter(paper_run=run).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    # Its folder was left saying "running"; the queued writer makes it say what the ledger says.
    root = settings.OUTPUTS_DIR / "paper_sessions"
    [message] = [dramatiq.Message.decode(m) for m in stub_broker.queues["paper"].queue]
    assert message.actor_name == "write_session_artifacts" and message.args == (run.id,)
    assert [r.status for r in sessions_scan(root) if r.session_id == run.id] == ["running"]
    session_artifacts_write(run_id=run.id)
    [alert] = [a for a in alerts(root, now=timezone.now())["alerts"] if a["session_id"] == run.id]
    assert alert["status"] == "aborted" and alert["message"] == "aborted: kill_switch: drill"
    # The rest of the epilogue is the one its session would have written, had it been running:
    # a session of the same bot and seed that a stop reached after the same 9 bars.
    reference = start(ready_bot)
    _stop_when_persisting(monkeypatch, 10, after=False, reason="kill_switch: drill")
    assert session_execute(reference.id) == "aborted"
    reference.refresh_from_db()
    assert open_orders(run) == [] and orders(run) == orders(reference)
    assert run.metrics.keys() == reference.metrics.keys() and run.metrics["bars"] == 9
    assert run.metrics == pytest.approx(reference.metrics, nan_ok=True)


def test_a_queued_session_whose_message_was_lost_is_enqueued_again(ready_bot, stub_broker, settings):
    run = start(ready_bot)
    stub_broker.flush_all()  # Redis restarted without persistence: the message is gone
    assert sessions_reconcile()["requeued"] == []
    age(run, settings.PAPER_REQUEUE_AFTER_SECONDS + 1)
    assert sessions_reconcile()["requeued"] == [run.id]
    assert sessions_reconcile()["requeued"] == []
    assert queued_ids(stub_broker) == [run.id]
    assert session_execute(run.id) == "success"


# --- hand-off at worker shutdown -------------------------------------------------------------------

def test_a_shutting_down_worker_hands_its_sessions_over(ready_bot, stub_broker, draining_cleared):
    reference = start(ready_bot)
    session_execute(reference.id)
    run = start(ready_bot, pace=60.0)  # a bar a second
    stub_broker.flush_all()
    result = {}
    thread = threading.Thread(target=lambda: result.update(r=session_execute(run.id, worker_id="old")))
    thread.start()
    deadline = time.time() + 20
    while PaperTradingRun.objects.get(pk=run.pk).bars_processed < 2 and time.time() < deadline:
        time.sleep(0.05)
    t0 = time.perf_counter()
    assert halts.handoff_all() == 1
    thread.join(5)
    assert not thread.is_alive() and result["r"] == "handed_off"
    assert time.perf_counter() - t0 < 2  # not a bar's wait, let alone the session's length
    run.refresh_from_db()
    assert run.status == "running" and run.worker_id == ""
    assert queued_ids(stub_broker, "paper.DQ") == [run.id]  # after a short delay, for other workers
    assert stages(run)[-1] == "session.handoff"
    # Its consumer still fetches while it shuts down: a session it is given is passed on, not run.
    stub_broker.flush_all()
    assert session_execute(run.id, worker_id="old") == "handed_off"
    assert queued_ids(stub_broker, "paper.DQ") == [run.id]
    run.refresh_from_db()
    assert run.worker_id == ""
    halts.draining_reset()  # a new worker process
    PaperTradingRun.objects.filter(pk=run.pk).update(pace=60_000.0)  # finish quickly
    run.config_snapshot["session"]["pace"] = 60_000.0
    PaperTradingRun.objects.filter(pk=run.pk).update(config_snapshot=run.config_snapshot)
    assert session_execute(run.id, worker_id="new") == "success"  # claimed at once: no stale wait
    assert fills(run) == fills(reference)


# --- database outages -------------------------------------------------------------------------------

def test_a_session_waits_out_a_database_outage_and_records_it(ready_bot, stub_broker, monkeypatch, settings):
    """Fault injection at the ledger boundary; tests/e2e/test_faults.py restarts a real PostgreSQL."""
    reference = start(ready_bot)
    session_execute(reference.id)
    run = start(ready_bot)
    real = ledger.session_bar_persist
    failures = {"n": 0}

    def flaky(**kw):
        if kw["bars_processed"] == 20 and failures["n"] < 3:
            failures["n"] += 1
            raise OperationalError("server closed the connection unexpectedly")
        return real(**kw)

    monkeypatch.setattr(ledger, "session_bar_persist", flaky)
    assert session_execute(run.id) == "success"
    assert failures["n"] == 3
    assert fills(run) == fills(reference)
    recovered = PaperFrame.objects.get(paper_run=run, stage="session.recovered").payload
    assert recovered["incident"] == "database_unavailable" and recovered["outage_seconds"] > 0
    from paper.runbook import session_read

    record = session_read(settings.OUTPUTS_DIR / "paper_sessions" / run.id)
    assert [i["kind"] for i in record.incidents] == ["database_unavailable"]


def test_a_database_outage_longer_than_the_limit_leaves_the_session_to_the_reconciler(
        ready_bot, stub_broker, monkeypatch, settings):
    settings.PAPER_DB_OUTAGE_SECONDS = 0.3
    run = start(ready_bot)

    def down(**kw):
        if kw["bars_processed"] >= 10:
            raise OperationalError("connection refused")
        return real(**kw)

    real = ledger.session_bar_persist
    monkeypatch.setattr(ledger, "session_bar_persist", down)
    assert session_execute(run.id, worker_id="w1") == "orphaned"
    run.refresh_from_db()
    assert run.status == "running" and run.bars_processed == 9  # nothing lost, nothing invented
    monkeypatch.setattr(ledger, "session_bar_persist", real)
    age(run, 20)
    assert sessions_reconcile()["resumed"] == [run.id]
    assert session_execute(run.id, worker_id="w2") == "success"
    run.refresh_from_db()
    assert run.bars_processed == 60 and run.num_fills == len(fills(run))


# --- the broker is down -----------------------------------------------------------------------------

def test_starting_a_session_while_the_broker_is_down_is_a_503_and_leaves_no_run_waiting(ready_bot):
    from dramatiq.brokers.redis import RedisBroker

    from config.errors import AppError
    from paper.actors import run_paper_session
    from paper.sessions import session_start

    dead = RedisBroker(url="redis://127.0.0.1:1/0")  # nothing listens on port 1
    previous = run_paper_session.broker
    run_paper_session.broker = dead
    dead.declare_actor(run_paper_session)
    try:
        with pytest.raises(AppError) as refused:
            session_start(bot=ready_bot, request=SessionRequest(starting_cash=1000, duration_minutes=5))
    finally:
        run_paper_session.broker = previous
    assert refused.value.status == 503 and refused.value.code == "broker_unavailable"
    assert "retry" in refused.value.message
    run = PaperTradingRun.objects.get(pk=refused.value.details["run_id"])
    assert run.status == "aborted" and run.status_reason.startswith("broker_unavailable: ")

