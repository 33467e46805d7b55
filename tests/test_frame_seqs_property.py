"""Property: whatever happens to a session (stops and kill switches landing before or after a
bar's write, database faults, lost commit acknowledgements, crashed and lost workers, resumes),
its frames' seqs run 1..N without a gap, and exactly one frame is terminal: the last.

The session is the real loop (paper.sessions.session_execute) over a real database; the events
are injected at its ledger write (ledger.services.session_bar_persist), the moment a stop that
"lands mid-bar" meets it (issue 13, finding 4). Crashes and lost workers are followed by what
production does: a stale heartbeat, the reconciler (with Dramatiq's StubBroker behind it, so it
queues and nothing runs behind the test's back), and a resume on another worker.
"""
from __future__ import annotations

from datetime import date, timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import paper.sessions as sessions
from bots.services import backtest_run, bot_create
from ledger.models import PaperFrame, PaperTradingRun
from ledger.services import TERMINAL_FRAME_STAGES
from paper.sessions import (
    SessionRequest,
    session_execute,
    session_start,
    sessions_reconcile,
    sessions_stop,
)
from risk.services import kill_switch_fire, kill_switch_rearm, sessions_stop_all

pytestmark = pytest.mark.django_db(transaction=True)

BARS = 8
ACTIONS = ("stop", "stop_all", "kill_switch", "db_fault", "lost_ack", "crash", "worker_lost")
events = st.lists(
    st.tuples(st.integers(0, BARS), st.sampled_from(("before", "after")), st.sampled_from(ACTIONS)),
    max_size=4, unique_by=lambda e: (e[0], e[1]),
)


class Crash(BaseException):
    """The worker process dies here (as a SIGKILL would): nothing after it runs."""


@pytest.fixture
def ready_bot(sample_data):
    bot = bot_create(name="prop", strategy="sma_crossover", params={"fast": 2, "slow": 4},
                     symbols=["ETH-USD"], timeframe="1d", risk={"max_drawdown_pct": 90})
    backtest_run(bot=bot, start=date(2022, 1, 1), end=date(2023, 12, 31))
    return bot


def _age(run_id: str, seconds: float = 3600) -> None:
    PaperTradingRun.objects.filter(pk=run_id).update(updated_at=timezone.now() - timedelta(seconds=seconds))


def _inject(monkeypatch, plan: list[tuple[int, str, str]]):
    real = sessions.ledger.session_bar_persist
    pending = {(bar, when): action for bar, when, action in plan}

    def act(run_id: str, action: str) -> None:
        if action == "stop":
            sessions_stop(run_ids=[run_id], reason="operator_stop: property")
        elif action == "stop_all":
            sessions_stop_all(reason="property")
        elif action == "kill_switch":
            kill_switch_fire(reason="property")
        elif action == "db_fault":
            raise OperationalError("the database went away (injected)")
        elif action == "crash":
            raise Crash
        elif action == "worker_lost":
            _age(run_id, 60)
            sessions_reconcile()

    def persist(**kw):
        bar, run_id = kw["bars_processed"], kw["run_id"]
        action = pending.pop((bar, "before"), None)
        if action:
            act(run_id, action)
        out = real(**kw)
        action = pending.pop((bar, "after"), None)
        if action == "lost_ack":  # committed, but the worker never heard: it retries the same write
            raise OperationalError("the commit's acknowledgement was lost (injected)")
        if action:
            act(run_id, action)
        return out

    monkeypatch.setattr(sessions.ledger, "session_bar_persist", persist)


def _drive(run_id: str) -> None:
    """Run the session to an end as production would: resume what a lost worker left."""
    for attempt in range(12):
        try:
            session_execute(run_id, worker_id=f"w{attempt}")
        except Crash:
            pass
        run = PaperTradingRun.objects.get(pk=run_id)
        said = PaperFrame.objects.filter(paper_run_id=run_id, stage__in=TERMINAL_FRAME_STAGES).exists()
        if run.is_terminal and said:
            return
        # A worker that is gone: its heartbeat goes stale; the reconciler resumes it, aborts it,
        # or writes the goodbye of a stop no session answered.
        _age(run_id)
        if run.is_terminal:
            PaperTradingRun.objects.filter(pk=run_id).update(ended_at=timezone.now() - timedelta(hours=1))
        sessions_reconcile()
    raise AssertionError(f"session {run_id} never ended")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=events)
@example(plan=[(4, "before", "stop_all")])  # stop-all landing mid-bar: the finding's reproduction
@example(plan=[(4, "before", "kill_switch")])
@example(plan=[(3, "after", "lost_ack"), (5, "before", "crash"), (6, "before", "stop")])
def test_frames_are_gapless_with_exactly_one_terminal(ready_bot, stub_broker, monkeypatch, plan):
    kill_switch_rearm()
    run = session_start(bot=ready_bot, request=SessionRequest(
        starting_cash=100_000, duration_minutes=BARS, seed=3, pace=60_000.0))
    with monkeypatch.context() as patch:
        patch.setattr(sessions.settings, "PAPER_DB_OUTAGE_SECONDS", 5.0)
        _inject(patch, plan)
        _drive(run.id)
    frames = list(PaperFrame.objects.filter(paper_run_id=run.id).order_by("seq").values_list("seq", "stage", "payload"))
    seqs = [seq for seq, _, _ in frames]
    assert seqs == list(range(1, len(seqs) + 1)), (plan, [(s, st_) for s, st_, _ in frames])
    terminal = [seq for seq, stage, _ in frames if stage in TERMINAL_FRAME_STAGES]
    assert terminal == [len(seqs)], (plan, [(s, st_) for s, st_, _ in frames])
    assert all(payload["seq"] == seq for seq, _, payload in frames)
    final = PaperTradingRun.objects.get(pk=run.id)
    goodbye = frames[-1][2]
    assert goodbye.get("status", final.status) == final.status
    kill_switch_rearm()
