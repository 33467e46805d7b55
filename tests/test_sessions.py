"""Live sessions through the service layer: start, the loop, frames, halts, stops and resume."""
from __future__ import annotations

import threading
import time
from datetime import date

import pytest
from django.utils import timezone

from bots.services import backtest_run, bot_create
from config.errors import AppError
from ledger.models import PaperEquityPoint, PaperFill, PaperFrame, PaperOrder, PaperTradingRun
from paper.sessions import (
    SessionRequest,
    session_bars,
    session_execute,
    session_start,
    sessions_stop,
    sessions_sweep_stale,
)
from risk.services import kill_switch_fire, kill_switch_rearm

pytestmark = pytest.mark.django_db(transaction=True)

FAST = dict(pace=60_000.0)  # 60 s bars at 1 ms each


@pytest.fixture
def ready_bot(sample_data):
    bot = bot_create(name="live", strategy="sma_crossover", params={"fast": 3, "slow": 8},
                     symbols=["ETH-USD"], timeframe="1d", risk={"max_drawdown_pct": 90})
    backtest_run(bot=bot, start=date(2022, 1, 1), end=date(2023, 12, 31))
    return bot


def start(bot, **kw):
    params = {"starting_cash": 100_000, "duration_minutes": 60, "seed": 5, **FAST, **kw}
    return session_start(bot=bot, request=SessionRequest(**params))


def test_a_session_runs_to_success_and_fills_the_ledger(ready_bot):
    run = start(ready_bot)
    assert run.status == "queued"
    assert session_execute(run.id) == "success"
    run.refresh_from_db()
    assert run.status == "success" and run.status_reason == "completed"
    assert run.bars_processed == 60 and run.ended_at is not None
    fills = PaperFill.objects.filter(paper_run=run)
    assert run.num_fills == fills.count() > 0
    assert run.total_pnl == pytest.approx(run.ending_equity - 100_000)
    assert PaperEquityPoint.objects.filter(paper_run=run).count() == 60
    stages = list(PaperFrame.objects.filter(paper_run=run).values_list("stage", flat=True))
    assert stages[0] == "session.started" and stages[-1] == "session.completed"
    assert stages.count("bar.received") == 60 and stages.count("equity.update") == 60
    assert "order.filled" in stages and "signal.emitted" in stages and "order.placed" in stages
    frame = PaperFrame.objects.filter(paper_run=run, stage="order.filled").first().payload
    assert {"task_id", "stage", "message", "timestamp", "equity", "positions"} <= set(frame)
    assert frame["task_id"] == run.id and frame["positions"]


def test_a_session_and_a_backtest_over_the_same_bars_give_the_same_fills(ready_bot):
    run = start(ready_bot, data_source="stored", start=date(2023, 3, 1))
    session_execute(run.id)
    warm, live = session_bars(run)
    engine = ready_bot.trading_config().build_engine(starting_cash=100_000, seed=run.seed)
    engine.warmup(warm)
    expected = engine.run(live)
    got = list(PaperFill.objects.filter(paper_run=run).order_by("fill_id").values_list("fill_id", "order_id", "side", "qty", "price"))
    assert got == [(f.fill_id, f.client_order_id, str(f.side), f.qty, f.price) for f in expected.fills]
    assert len(got) > 0


def test_a_risk_breach_ends_the_session_with_risk_halted(sample_data):
    bot = bot_create(name="tight", strategy="buy_and_hold", symbols=["ETH-USD"], timeframe="1d",
                     risk={"max_drawdown_pct": 0.5})
    backtest_run(bot=bot, start=date(2022, 1, 1), end=date(2023, 12, 31))
    run = start(bot)
    assert session_execute(run.id) == "aborted"
    run.refresh_from_db()
    assert run.status_reason.startswith("risk_halt: max_drawdown_pct breached")
    assert run.halt["limit"] == "max_drawdown_pct"
    stages = list(PaperFrame.objects.filter(paper_run=run).values_list("stage", flat=True))
    assert "risk.halted" in stages and stages[-1] == "session.stopped"
    assert run.bars_processed < 60


def test_the_gate_refusal_names_the_condition(sample_data):
    bot = bot_create(name="nobt", strategy="buy_and_hold", symbols=["ETH-USD"], timeframe="1d")
    with pytest.raises(AppError) as exc:
        start(bot)
    assert exc.value.status == 409 and exc.value.details["condition"] == "no_backtest"
    assert not PaperTradingRun.objects.exists()


def test_a_latched_kill_switch_refuses_new_sessions_until_rearmed(ready_bot):
    kill_switch_fire(reason="test")
    with pytest.raises(AppError) as exc:
        start(ready_bot)
    assert exc.value.status == 423
    kill_switch_rearm()
    assert start(ready_bot).status == "queued"


@pytest.mark.parametrize("field,value", [
    ("starting_cash", 0), ("starting_cash", -5), ("starting_cash", float("nan")), ("duration_minutes", 0),
    ("pace", 0), ("data_source", "moon"), ("symbol", "DOGE-USD"), ("warmup_bars", -1),
])
def test_bad_session_input_is_refused_with_the_field(ready_bot, field, value):
    with pytest.raises(AppError) as exc:
        start(ready_bot, **{field: value})
    assert 400 <= exc.value.status < 500
    assert exc.value.details[0]["field"] == field
    assert not PaperTradingRun.objects.exists()


def test_stop_wakes_a_waiting_session_at_once(ready_bot):
    run = start(ready_bot, pace=1.0)  # a bar a minute: it would wait ~60 s for its second bar
    worker = threading.Thread(target=session_execute, args=(run.id,))
    worker.start()
    for _ in range(500):
        run.refresh_from_db()
        if run.bars_processed >= 1:
            break
        time.sleep(0.01)
    report = sessions_stop(run_ids=[run.id], reason="operator_stop: test")
    worker.join(5)
    assert not worker.is_alive()
    run.refresh_from_db()
    assert run.status == "aborted" and run.status_reason == "operator_stop: test"
    assert report["stopped"] == [run.id] and report["elapsed_ms"] < 1000
    assert PaperFrame.objects.filter(paper_run=run).last().stage == "session.stopped"
    assert PaperOrder.objects.filter(paper_run=run, status__in=["accepted", "partially_filled"]).count() == 0


def test_a_stop_closes_the_run_in_the_ledger_at_once_with_no_session_to_hear_it(ready_bot):
    run = start(ready_bot)
    # Claimed and written up to bar 3 by a worker that has gone: nothing will acknowledge.
    PaperTradingRun.objects.filter(pk=run.pk).update(status="running", bars_processed=3, ending_equity=100_250.0,
                                                     worker_id="gone")
    queued = start(ready_bot)
    report = sessions_stop(run_ids=None, reason="kill_switch: drill")
    assert sorted(report["stopped"]) == sorted([run.id, queued.id]) and report["count"] == 2
    run.refresh_from_db()
    assert (run.status, run.status_reason, run.stop_requested) == ("aborted", "kill_switch: drill", "kill_switch: drill")
    assert run.ended_at is not None and run.total_pnl == 250.0
    queued.refresh_from_db()
    assert queued.status == "aborted" and queued.total_pnl is None  # it never traded
    assert session_execute(queued.id) == "skipped"


def _stop_when_persisting(monkeypatch, bar: int, *, after: bool, reason: str) -> None:
    """Close the run through sessions_stop just before (or just after) the write of `bar`."""
    import paper.sessions as sessions

    real = sessions.ledger.session_bar_persist

    def persist(**kw):
        if kw["bars_processed"] == bar and not after:
            sessions_stop(run_ids=[kw["run_id"]], reason=reason)
        out = real(**kw)
        if kw["bars_processed"] == bar and after:
            sessions_stop(run_ids=[kw["run_id"]], reason=reason)
        return out

    monkeypatch.setattr(sessions.ledger, "session_bar_persist", persist)


def _assert_epilogue_matches_the_ledger(run, bars: int, reason: str) -> None:
    run.refresh_from_db()
    assert (run.status, run.status_reason, run.bars_processed) == ("aborted", reason, bars)
    fills = PaperFill.objects.filter(paper_run=run).count()
    assert run.num_fills == fills == run.metrics["num_fills"] and run.metrics["bars"] == bars
    last_point = PaperEquityPoint.objects.filter(paper_run=run).order_by("bar_index").last()
    assert PaperEquityPoint.objects.filter(paper_run=run).count() == bars
    assert run.ending_equity == run.metrics["final_equity"] == pytest.approx(last_point.equity)
    assert run.total_pnl == pytest.approx(run.ending_equity - run.starting_cash)
    assert not PaperOrder.objects.filter(paper_run=run, status__in=["accepted", "partially_filled"]).exists()
    stages = list(PaperFrame.objects.filter(paper_run=run).order_by("seq").values_list("stage", flat=True))
    assert stages.count("equity.update") == bars and stages[-1] == "session.stopped"
    goodbye = PaperFrame.objects.filter(paper_run=run).order_by("seq").last().payload
    assert goodbye["status"] == "aborted" and goodbye["status_reason"] == reason


def test_a_stop_landing_mid_bar_keeps_the_ledger_as_of_the_last_bar_and_the_epilogue_agrees(
        ready_bot, monkeypatch):
    run = start(ready_bot)
    _stop_when_persisting(monkeypatch, 40, after=False, reason="kill_switch: mid-bar")
    # The engine ran bar 40 but the ledger refused it: the session rebuilds its engine at bar 39
    # so the cancelled orders and the metrics it writes are those of the ledger's 39 bars.
    assert session_execute(run.id) == "aborted"
    _assert_epilogue_matches_the_ledger(run, 39, "kill_switch: mid-bar")


def test_a_session_ending_by_itself_as_a_stop_closes_it_says_what_the_ledger_says(ready_bot, monkeypatch):
    run = start(ready_bot)
    _stop_when_persisting(monkeypatch, 60, after=True, reason="operator_stop: late")
    assert session_execute(run.id) == "aborted"
    _assert_epilogue_matches_the_ledger(run, 60, "operator_stop: late")


def test_a_killed_worker_resumes_from_the_ledger_without_losing_or_duplicating_fills(ready_bot, monkeypatch):
    run = start(ready_bot)
    reference = start(ready_bot)  # same bot, same seed, same plan: the uninterrupted run
    session_execute(reference.id)

    import paper.sessions as sessions

    real_persist = sessions._SessionLoop.persist
    calls = {"n": 0}

    def dying_persist(self, *, bars_processed):
        real_persist(self, bars_processed=bars_processed)
        calls["n"] += 1
        if bars_processed == 30:
            raise SystemExit("worker killed")  # nothing after bar 30 is written

    monkeypatch.setattr(sessions._SessionLoop, "persist", dying_persist)
    with pytest.raises(SystemExit):
        session_execute(run.id, worker_id="w1")
    monkeypatch.setattr(sessions._SessionLoop, "persist", real_persist)
    run.refresh_from_db()
    assert run.status == "running" and run.bars_processed == 30
    # Redelivery to another worker while the heartbeat is fresh is refused (no double run) ...
    assert session_execute(run.id, worker_id="w2") == "skipped"
    # ... and once the heartbeat is stale it resumes from the ledger.
    PaperTradingRun.objects.filter(pk=run.pk).update(updated_at=timezone.now() - timezone.timedelta(seconds=60))
    assert session_execute(run.id, worker_id="w2") == "success"
    got = list(PaperFill.objects.filter(paper_run=run).order_by("fill_id").values_list("fill_id", "qty", "price"))
    want = list(PaperFill.objects.filter(paper_run=reference).order_by("fill_id").values_list("fill_id", "qty", "price"))
    assert got == want and len(got) > 0
    assert PaperEquityPoint.objects.filter(paper_run=run).count() == 60
    stages = list(PaperFrame.objects.filter(paper_run=run).values_list("stage", flat=True))
    assert "session.resumed" in stages
    seqs = list(PaperFrame.objects.filter(paper_run=run).values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))


def test_a_stale_session_is_swept_as_aborted(ready_bot):
    run = start(ready_bot)
    PaperTradingRun.objects.filter(pk=run.pk).update(status="running", updated_at=timezone.now() - timezone.timedelta(hours=1))
    assert sessions_sweep_stale(stale_seconds=120) == [run.id]
    run.refresh_from_db()
    assert run.status == "aborted" and run.status_reason.startswith("worker_lost")
    assert run.metrics["bars"] == 0  # measured from its (empty) ledger: no session will write them


def test_a_live_session_writes_the_runbook_folder(ready_bot, settings):
    import csv
    import json

    from paper import artifact_contract as c
    from paper import runbook

    run = start(ready_bot, request_id="req-live-1") if "request_id" in SessionRequest.__dataclass_fields__ else start(ready_bot)
    session_execute(run.id)
    root = settings.OUTPUTS_DIR / "paper_sessions"
    folder = root / run.id
    assert all((folder / name).exists() for name in c.CANONICAL_FILES)
    status = json.loads((folder / c.STATUS).read_text())
    assert (status["status"], status["terminal"], status["status_reason"]) == ("success", True, "completed")
    report = json.loads((folder / c.REPORT).read_text())
    assert report["machine_contract"]["contract_type"] == "quantlab.paper.result"
    with open(folder / c.TRADES) as fh:
        rows = list(csv.DictReader(fh))
    db = list(PaperFill.objects.filter(paper_run=run).order_by("fill_id").values_list("fill_id", "price"))
    assert [(r["fill_id"], float(r["price"])) for r in rows] == db and db
    record = runbook.session_show(folder)
    assert record.status == "success" and not record.missing and record.issue is None
    assert (root / c.INDEX_JSON).exists()


def test_charts_are_drawn_with_the_database_connection_given_back(ready_bot, monkeypatch):
    # Charts wait their turn (one at a time per process); a writer that held its pooled
    # connection meanwhile emptied the pool when 50 sessions ended at once.
    from django.db import connection

    from paper import artifacts

    held = []
    real = artifacts._render
    monkeypatch.setattr(artifacts, "_render",
                        lambda *args, **kw: held.append(connection.connection is not None) or real(*args, **kw))
    run = start(ready_bot)
    assert session_execute(run.id) == "success"
    assert held == [False, False], "equity and drawdown charts drawn with no connection held"


def test_a_stopped_session_marks_its_folder_aborted(ready_bot, settings):
    import json

    from paper import artifact_contract as c

    run = start(ready_bot, pace=1.0)
    worker = threading.Thread(target=session_execute, args=(run.id,))
    worker.start()
    for _ in range(500):
        if (settings.OUTPUTS_DIR / "paper_sessions" / run.id / c.STATUS).exists():
            break
        time.sleep(0.01)
    sessions_stop(run_ids=[run.id], reason="operator_stop: test")
    worker.join(5)
    status = json.loads((settings.OUTPUTS_DIR / "paper_sessions" / run.id / c.STATUS).read_text())
    assert (status["status"], status["status_reason"]) == ("aborted", "operator_stop: test")
