"""The kill switch no input can defeat: every door latches (or stops) whatever its reason says,
and fails closed when the latch or the stop cannot be written.

Issue 13, finding 1: `{"reason": "x\\u0000"}` answered 500 on PostgreSQL and left the switch
armed and the sessions trading.
"""
import json

import pytest
from django.contrib.auth.models import User
from django.db import connection

from bots.services import bot_create
from ledger.models import PaperTradingRun
from ledger.services import run_create
from paper import halts
from paper.sessions import SessionRequest, session_start
from paper.tokens import api_token_create
from risk.models import HaltEvent, KillSwitch
from risk.services import (
    KillSwitchLatched,
    halt_reason,
    kill_switch_assert_armed,
    kill_switch_rearm,
)

# (door, latches, the reason prefix it stores)
DOORS = [
    ("/kill-switch", True, "kill_switch: "),
    ("/bots/halt-all", True, "kill_switch: "),
    ("/paper/stop-all", False, "operator_stop: "),
]

# (reason sent, reason kept)
REASONS = [
    ("x\u0000", "x"),
    ("drill\u0000\u0000 at noon", "drill at noon"),
    ("line one\nline two\ttabbed\r\n", "line one line two tabbed"),
    ("bell\u0007 escape\u001b[31m red", "bell escape[31m red"),
    ("lone \ud800 surrogate", "lone surrogate"),
    ("zero\u200bwidth \ufeffbom", "zerowidth bom"),
    ("\u0000\u0001\u0002", None),  # nothing left: the door's default reason
    ("é" * 5000, "é" * 179 + "\u2026"),
]


@pytest.fixture
def api(client):
    user = User.objects.create_user("alice", password="pw")
    _, token = api_token_create(user=user)
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


@pytest.fixture
def bot(db):
    return bot_create(name="ks", strategy="sma_crossover", params={"fast": 10, "slow": 30},
                      symbols=["ETH-USD"], timeframe="1d")


def queued_run(bot):
    config = bot.trading_config()
    return run_create(bot=bot, starting_cash=1000, symbol="ETH-USD", timeframe="1d", data_source="synthetic",
                      seed=1, config_snapshot=config.canonical(), config_hash=config.config_hash)


def post(api, url, body):
    # json.dumps writes "\ud800" as the escape a client sends; the server's parser reads it back.
    return api.post(url, data=json.dumps(body), content_type="application/json")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("door,latches,prefix", DOORS)
@pytest.mark.parametrize("sent,kept", REASONS)
def test_every_door_fires_whatever_its_reason_says(api, bot, door, latches, prefix, sent, kept):
    run = queued_run(bot)
    response = post(api, door, {"reason": sent})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["latched"] is latches
    assert body["reason"].startswith(prefix)
    if kept is not None:
        assert body["reason"] == prefix + kept
    assert "\u0000" not in body["reason"] and len(body["reason"]) <= 200
    assert KillSwitch.objects.filter(pk=1, latched=True).exists() is latches
    run.refresh_from_db()
    assert run.status == "aborted" and run.status_reason == body["reason"] == run.stop_requested
    assert HaltEvent.objects.get().reason == body["reason"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("door,latches,prefix", DOORS)
def test_an_already_latched_switch_still_stops_with_a_hostile_reason(api, bot, door, latches, prefix):
    assert post(api, "/kill-switch", {"reason": "first\u0000"}).status_code == 200
    run = queued_run(bot)
    response = post(api, door, {"reason": "again\u0000"})
    assert response.status_code == 200, response.content
    run.refresh_from_db()
    assert run.status == "aborted" and run.status_reason == f"{prefix}again"
    assert KillSwitch.objects.get(pk=1).reason == "kill_switch: first"


def _refuse_writes_to(table: str) -> None:
    """A real database refusal: a trigger that aborts every UPDATE and INSERT on `table`."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("CREATE OR REPLACE FUNCTION refuse_write() RETURNS trigger AS "
                           "$$ BEGIN RAISE EXCEPTION 'writes refused by the test'; END $$ LANGUAGE plpgsql")
            cursor.execute(f"CREATE TRIGGER refuse_write BEFORE INSERT OR UPDATE ON {table} "
                           "FOR EACH ROW EXECUTE FUNCTION refuse_write()")
        else:
            for event in ("INSERT", "UPDATE"):
                cursor.execute(f"CREATE TRIGGER refuse_{event.lower()} BEFORE {event} ON {table} "
                               "BEGIN SELECT RAISE(ABORT, 'writes refused by the test'); END")


def _allow_writes_to(table: str) -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"DROP TRIGGER IF EXISTS refuse_write ON {table}")
        else:
            for event in ("insert", "update"):
                cursor.execute(f"DROP TRIGGER IF EXISTS refuse_{event}")


@pytest.mark.django_db(transaction=True)
def test_a_latch_that_cannot_be_written_still_stops_everything_and_says_so(api, bot):
    run = queued_run(bot)
    KillSwitch.objects.get_or_create(pk=1)
    _refuse_writes_to("risk_kill_switch")
    try:
        response = post(api, "/kill-switch", {"reason": "db trouble"})
    finally:
        _allow_writes_to("risk_kill_switch")
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "halt_incomplete" and "latch not written" in body["detail"]
    assert body["errors"]["reason"] == "kill_switch: db trouble"
    run.refresh_from_db()
    assert run.status == "aborted"  # the stop went out all the same


@pytest.mark.django_db(transaction=True)
def test_a_stop_that_cannot_be_written_is_still_pushed_to_running_sessions(api, bot):
    run = queued_run(bot)
    signal = halts.session_event(run.id)  # the session's wake-up, as its loop registers it
    try:
        _refuse_writes_to("paper_trading_runs")
        try:
            response = post(api, "/paper/stop-all", {"reason": "db trouble"})
        finally:
            _allow_writes_to("paper_trading_runs")
        assert response.status_code == 503
        assert response.json()["code"] == "halt_incomplete"
        assert "paper" in response.json()["detail"]
        assert signal.is_set() and signal.reason == "operator_stop: db trouble"
        assert PaperTradingRun.objects.get(pk=run.id).status == "queued"  # the ledger could not say it
    finally:
        halts.session_event_drop(run.id)


@pytest.mark.django_db(transaction=True)
def test_a_kill_switch_whose_state_cannot_be_read_counts_as_latched(bot):
    kill_switch_rearm()
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE risk_kill_switch RENAME TO risk_kill_switch_away")
    try:
        with pytest.raises(KillSwitchLatched) as refused:
            kill_switch_assert_armed()
        assert refused.value.code == "kill_switch_unreadable" and refused.value.status == 423
        with pytest.raises(KillSwitchLatched):
            session_start(bot=bot, request=SessionRequest(starting_cash=1000, duration_minutes=1))
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE risk_kill_switch_away RENAME TO risk_kill_switch")
    assert not PaperTradingRun.objects.exists()


@pytest.mark.parametrize("sent,kept", [(s, k) for s, k in REASONS if k is not None])
def test_halt_reason_keeps_what_every_column_takes(sent, kept):
    assert halt_reason(sent, default="d") == kept
    assert halt_reason(None, default="d") == halt_reason("", default="d") == halt_reason(5, default="d") == "d"


@pytest.mark.django_db(transaction=True)
def test_a_stop_binds_run_persist_too(bot, eth_bars):
    """Every ledger writer refuses a run a stop closed, and no end time is taken from a stale row."""
    from ledger.models import PaperFill
    from ledger.services import RunClosed, run_persist
    from paper.sessions import sessions_stop

    run = queued_run(bot)
    stale = PaperTradingRun.objects.get(pk=run.pk)  # read before the stop: status queued, no ended_at
    sessions_stop(run_ids=[run.pk], reason="kill_switch: drill")
    closed = PaperTradingRun.objects.get(pk=run.pk)
    result = bot.trading_config().build_engine(starting_cash=1000, seed=1).run(eth_bars.slice(0, 300))
    assert result.num_fills > 0
    with pytest.raises(RunClosed):
        run_persist(run=stale, result=result, status="success", status_reason="completed")
    after = PaperTradingRun.objects.get(pk=run.pk)
    assert (after.status, after.status_reason, after.ended_at) == ("aborted", "kill_switch: drill", closed.ended_at)
    assert not PaperFill.objects.filter(paper_run_id=run.pk).exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("door", ["/kill-switch", "/bots/halt-all", "/paper/stop-all"])
def test_each_door_runs_each_halt_handler_once_and_stops_each_session_once(api, bot, door, monkeypatch):
    """One stop path (issue 14): every door reaches the paper subsystem's one handler once, which
    closes all N sessions in one ledger update and pushes one stop for each."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from risk import registry

    runs = [queued_run(bot) for _ in range(4)]
    calls: dict[str, int] = {}
    for name, handler in registry.halt_handlers().items():  # each one counted (a run-time handler wins)
        def counted(reason, _name=name, _handler=handler):
            calls[_name] = calls.get(_name, 0) + 1
            return _handler(reason)
        monkeypatch.setitem(registry._HANDLERS, name, counted)
    pushed: list[list[str]] = []
    real_push = halts.stop_push
    monkeypatch.setattr(halts, "stop_push", lambda ids, reason="": (pushed.append(list(ids)), real_push(ids, reason)))
    with CaptureQueriesContext(connection) as queries:
        assert post(api, door, {"reason": "once"}).status_code == 200
    assert calls == {"paper": 1}
    closing = [q["sql"] for q in queries.captured_queries
               if q["sql"].startswith('UPDATE "paper_trading_runs"') and "stop_requested" in q["sql"]]
    assert len(closing) == 1
    assert pushed == [sorted(r.id for r in runs)]
    assert set(PaperTradingRun.objects.values_list("status", flat=True)) == {"aborted"}
