"""The paper API: runs and their ledger rows and frames, paginated; stop, stop-all and the kill switch.

Runs with data come from the ledger services (as in test_ledger_sql) or a real session loop.
"""
import json
import threading
import time
from datetime import date

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from bots.services import backtest_run, bot_create
from ledger.models import PaperFrame, PaperTradingRun
from ledger.services import frames_record, run_create, run_persist
from paper.sessions import SessionRequest, session_execute, session_start
from paper.tokens import api_token_create
from risk.models import HaltEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(db):
    return User.objects.create_user("alice", password="pw")


@pytest.fixture
def api(client, alice):
    user = alice
    _, token = api_token_create(user=user)
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def post(api, url, body=None):
    return api.post(url, data="" if body is None else json.dumps(body), content_type="application/json")


@pytest.fixture
def bot(alice):
    return bot_create(name="ledger", strategy="sma_crossover", params={"fast": 10, "slow": 30},
                      symbols=["ETH-USD"], timeframe="1d", owner=alice)


@pytest.fixture
def persisted(bot, eth_bars):
    """A finished run with 500 bars of fills, orders and equity, and five frames."""
    config = bot.trading_config()
    result = config.build_engine(starting_cash=100_000, seed=0).run(eth_bars.slice(0, 500))
    run = run_create(bot=bot, starting_cash=100_000, symbol="ETH-USD", timeframe="1d", data_source="stored",
                     seed=0, config_snapshot=config.canonical(), config_hash=config.config_hash, duration_minutes=500)
    run_persist(run=run, result=result, status="success", status_reason="completed")
    now = timezone.now().isoformat()
    frames_record(run=run, frames=[
        {"task_id": run.id, "stage": "bar.received", "message": f"bar {i}", "timestamp": now, "seq": i}
        for i in range(1, 6)
    ])
    return run, result


def queued_run(bot, **kw):
    config = bot.trading_config()
    return run_create(bot=bot, starting_cash=1000, symbol="ETH-USD", timeframe="1d", data_source="synthetic",
                      seed=1, config_snapshot=config.canonical(), config_hash=config.config_hash, **kw)


# --- reading runs --------------------------------------------------------------------------------

def test_a_run_shows_equity_positions_and_its_ledger_totals(api, persisted):
    run, result = persisted
    response = api.get(f"/paper/{run.id}")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == run.id and body["bot_id"] == run.bot_id and body["status"] == "success"
    assert body["equity"] == pytest.approx(result.final_equity)
    assert body["total_pnl"] == pytest.approx(result.final_equity - 100_000)
    assert body["num_fills"] == result.num_fills > 0 and body["bars_processed"] == 500
    assert body["data_source"] == "stored" and body["data_label"] == "stored"
    assert body["metrics"]["sharpe"] == result.metrics["sharpe"] and body["config_hash"] == run.config_hash
    assert body["ws"] == f"/ws/paper/{run.id}" and body["duration_minutes"] == 500
    final_position = float(result.position[-1])
    if final_position:
        [(symbol, position)] = body["positions"].items()
        assert symbol == "ETH-USD" and position["qty"] == pytest.approx(final_position) and position["avg_price"] > 0
    else:
        assert body["positions"] == {}


def test_positions_follow_the_average_cost_of_the_fills(api, bot):
    from ledger.models import PaperFill

    run = queued_run(bot)
    fills = [("buy", 2, 100.0), ("buy", 2, 110.0), ("sell", 1, 120.0), ("sell", 5, 90.0)]
    PaperFill.objects.bulk_create([
        PaperFill(paper_run=run, fill_id=f"f{i}", order_id=f"o{i}", symbol="ETH-USD", side=side, qty=qty, price=price,
                  fee=0, liquidity="taker", bar_index=i, filled_at=timezone.now())
        for i, (side, qty, price) in enumerate(fills)
    ])
    # long 2@100 + 2@110 -> 4 @ 105; sell 1 -> 3 @ 105; sell 5 flips to short 2 opened at 90.
    assert api.get(f"/paper/{run.id}").json()["positions"] == {"ETH-USD": {"qty": -2.0, "avg_price": 90.0}}


def test_a_queued_run_shows_its_starting_cash_as_equity(api, bot):
    run = queued_run(bot)
    body = api.get(f"/paper/{run.id}").json()
    assert body["equity"] == 1000 and body["total_pnl"] is None and body["positions"] == {}
    assert body["data_label"] == "synthetic" and body["ended_at"] is None


def test_runs_are_listed_newest_first_filtered_and_paginated(api, bot, persisted):
    run, _ = persisted
    other = bot_create(name="other", strategy="buy_and_hold", symbols=["ETH-USD"], timeframe="1d")
    queued = [queued_run(bot), queued_run(other)]
    page = api.get("/paper").json()
    assert page["count"] == 3 and [r["id"] for r in page["items"]] == [queued[1].id, queued[0].id, run.id]
    assert api.get("/paper?status=success").json()["items"][0]["id"] == run.id
    assert api.get("/paper?status=queued").json()["count"] == 2
    assert [r["id"] for r in api.get(f"/paper?bot_id={other.pk}").json()["items"]] == [queued[1].id]
    page = api.get("/paper?limit=1&offset=1").json()
    assert page["count"] == 3 and [r["id"] for r in page["items"]] == [queued[0].id]


def test_fills_orders_and_equity_are_paginated_in_ledger_order(api, persisted):
    run, result = persisted
    fills = api.get(f"/paper/{run.id}/fills?limit=1000").json()
    assert fills["count"] == result.num_fills
    assert [f["fill_id"] for f in fills["items"]] == [f.fill_id for f in result.fills]
    assert set(fills["items"][0]) >= {"order_id", "symbol", "side", "qty", "price", "fee", "filled_at"}
    page = api.get(f"/paper/{run.id}/fills?limit=2&offset=1").json()
    assert [f["fill_id"] for f in page["items"]] == [f.fill_id for f in result.fills[1:3]]

    orders = api.get(f"/paper/{run.id}/orders").json()
    assert orders["count"] == len(result.orders) and orders["items"][0]["status"]

    equity = api.get(f"/paper/{run.id}/equity").json()
    assert equity["count"] == 500 and len(equity["items"]) == 100  # the default page
    assert [p["bar_index"] for p in equity["items"][:3]] == [0, 1, 2]
    last = api.get(f"/paper/{run.id}/equity?offset=499").json()["items"]
    assert last[0]["equity"] == pytest.approx(result.final_equity)


def ledger_queries(queries) -> list[str]:
    """The SQL a request sent beyond authenticating its token."""
    return [q["sql"] for q in queries.captured_queries if "api_tokens" not in q["sql"]]


def test_a_fills_page_is_one_query_counted_by_the_run_row(api, persisted):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    run, result = persisted
    with CaptureQueriesContext(connection) as queries:
        page = api.get(f"/paper/{run.id}/fills?limit=5&offset=3").json()
    assert page["count"] == result.num_fills == run.fills.count()
    assert [f["fill_id"] for f in page["items"]] == [f.fill_id for f in result.fills[3:8]]
    assert set(page["items"][0]) == set(FILL_KEYS)
    [sql] = ledger_queries(queries)
    assert "paper_fills" in sql and "num_fills" in sql and "COUNT(" not in sql.upper(), sql
    with CaptureQueriesContext(connection) as queries:
        beyond = api.get(f"/paper/{run.id}/fills?offset={result.num_fills}").json()
    assert beyond == {"items": [], "count": result.num_fills}
    assert len(ledger_queries(queries)) == 2  # an empty page asks its count alone


FILL_KEYS = ("fill_id", "order_id", "symbol", "side", "qty", "price", "fee", "liquidity", "bar_index", "filled_at")


def test_the_fills_of_a_run_without_fills_are_an_empty_page_not_a_404(api, bot):
    run = queued_run(bot)
    assert api.get(f"/paper/{run.id}/fills").json() == {"items": [], "count": 0}


def test_list_pages_are_one_query_with_their_count_deep_pages_included(api, bot):
    """Deep pages (offset >= 500) select their rows by ids an inner query pages from an index."""
    import copy
    from datetime import timedelta

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from ledger.selectors import DEFERRED_JOIN_OFFSET

    template = queued_run(bot)
    clones = []
    for i in range(1, 620):
        clone = copy.copy(template)
        clone.pk = f"{template.pk[:-8]}{i:08x}"
        clone.created_at = template.created_at - timedelta(seconds=i // 2)  # ties: the id breaks them
        clone.status = "aborted" if i % 3 == 0 else "queued"
        clones.append(clone)
    PaperTradingRun.objects.bulk_create(clones)
    newest_first = list(PaperTradingRun.objects.order_by("-created_at", "-id").values_list("id", "status"))
    assert len(newest_first) == 620 and DEFERRED_JOIN_OFFSET < 620
    aborted = [run_id for run_id, status in newest_first if status == "aborted"]
    cases = [("", [run_id for run_id, _ in newest_first]), ("&status=aborted", aborted)]
    for query, expected in cases:
        for offset in (0, 450, 499, 500, 560, len(expected) - 3, len(expected), len(expected) + 50):
            with CaptureQueriesContext(connection) as queries:
                page = api.get(f"/paper?limit=50&offset={offset}{query}").json()
            assert page["count"] == len(expected), (query, offset)
            assert [r["id"] for r in page["items"]] == expected[offset:offset + 50], (query, offset)
            assert len(ledger_queries(queries)) == (1 if offset < len(expected) else 2), (query, offset)
    assert "_page_count" not in api.get("/paper?limit=1").json()["items"][0]


def test_frames_come_in_seq_order_and_resume_after_a_seq(api, persisted):
    run, _ = persisted
    frames = api.get(f"/paper/{run.id}/frames").json()
    assert frames["count"] == 5 and [f["seq"] for f in frames["items"]] == [1, 2, 3, 4, 5]
    assert frames["items"][0]["payload"]["task_id"] == run.id
    later = api.get(f"/paper/{run.id}/frames?after_seq=3").json()
    assert later["count"] == 2 and [f["seq"] for f in later["items"]] == [4, 5]


@pytest.mark.parametrize("suffix", ["", "/fills", "/orders", "/equity", "/frames"])
def test_an_unknown_run_is_404(api, suffix):
    response = api.get(f"/paper/20990101T000000Z-deadbeef{suffix}")
    assert response.status_code == 404 and response.json()["code"] == "run_not_found"


# --- stopping ------------------------------------------------------------------------------------

def test_stop_ends_a_queued_run(api, bot):
    run = queued_run(bot)
    response = post(api, f"/paper/{run.id}/stop")
    assert response.status_code == 200
    assert response.json()["stopped"] == [run.id] and response.json()["count"] == 1
    run.refresh_from_db()
    assert run.status == "aborted" and run.status_reason == "operator_stop: stopped by alice"


def test_stop_of_a_finished_run_stops_nothing(api, persisted):
    run, _ = persisted
    body = post(api, f"/paper/{run.id}/stop").json()
    assert body["count"] == 0 and "already success" in body["detail"]


def test_stop_of_an_unknown_run_is_404(api):
    assert post(api, "/paper/nope/stop").status_code == 404


def test_stop_all_stops_every_session_without_latching(api, bot):
    runs = [queued_run(bot), queued_run(bot)]
    response = post(api, "/paper/stop-all", {"reason": "end of day"})
    assert response.status_code == 200
    report = response.json()
    assert report["scope"] == "paper" and report["latched"] is False and report["reason"] == "operator_stop: end of day"
    [paper] = report["subsystems"]
    assert paper["subsystem"] == "paper" and sorted(paper["stopped"]) == sorted(r.id for r in runs)
    assert report["stopped"] == 2 and report["elapsed_ms"] >= 0
    assert set(PaperTradingRun.objects.values_list("status", flat=True)) == {"aborted"}
    assert HaltEvent.objects.get().scope == "paper"


def test_stop_all_is_not_taken_for_a_run_id(api, bot):
    queued_run(bot)
    assert api.get("/paper/stop-all").status_code == 405
    assert PaperTradingRun.objects.get().status == "queued"


def test_the_kill_switch_stops_everything_latches_and_rearms(api, bot):
    run = queued_run(bot)
    response = post(api, "/kill-switch")
    assert response.status_code == 200
    report = response.json()
    assert report["scope"] == "kill-switch" and report["latched"] is True
    assert report["reason"] == "kill_switch: kill switch fired by alice" and report["elapsed_ms"] >= 0
    by_name = {s["subsystem"]: s for s in report["subsystems"]}
    assert set(by_name) == {"paper"}  # one handler per subsystem with something of its own to stop
    assert all({"stopped", "count", "elapsed_ms", "detail"} <= set(s) for s in report["subsystems"])
    assert by_name["paper"]["stopped"] == [run.id]
    run.refresh_from_db()
    assert run.status == "aborted" and run.status_reason.startswith("kill_switch")

    state = api.get("/kill-switch").json()
    assert state["latched"] is True and state["latched_by"] == "alice" and state["latched_at"]
    assert state["subsystems"] == ["paper"]
    refused = post(api, "/kill-switch/rearm")
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden" and "staff" in refused.json()["detail"]
    assert api.get("/kill-switch").json()["latched"] is True
    User.objects.filter(username="alice").update(is_staff=True)  # re-arming needs staff
    rearmed = post(api, "/kill-switch/rearm").json()
    assert rearmed["latched"] is False and rearmed["rearmed_at"] and rearmed["rearmed_by"] == "alice"


@pytest.fixture
def sqlite_readers_do_not_lock():
    """The test database is SQLite's shared-cache in-memory database, where a reader's table
    lock makes a concurrent writer fail at once (no busy timeout), unlike a file database or
    PostgreSQL. Readers that skip the lock keep the session thread and this test apart."""
    from django.db import connection
    from django.db.backends.signals import connection_created

    def no_read_locks(sender, connection, **kwargs):
        if connection.vendor == "sqlite":
            connection.cursor().execute("PRAGMA read_uncommitted = 1")

    connection_created.connect(no_read_locks)
    if connection.vendor == "sqlite":
        connection.cursor().execute("PRAGMA read_uncommitted = 1")
    yield
    connection_created.disconnect(no_read_locks)
    if connection.vendor == "sqlite":
        connection.cursor().execute("PRAGMA read_uncommitted = 0")


@pytest.mark.django_db(transaction=True)
def test_the_kill_switch_stops_a_running_session_at_once(client, sample_data, sqlite_readers_do_not_lock):
    user = User.objects.create_user("ops")
    _, token = api_token_create(user=user)
    bot = bot_create(name="live", strategy="sma_crossover", params={"fast": 3, "slow": 8},
                     symbols=["ETH-USD"], timeframe="1d", risk={"max_drawdown_pct": 90})
    backtest_run(bot=bot, start=date(2022, 1, 1), end=date(2023, 12, 31))
    # A bar a minute: without the kill switch it would wait ~60 s for its second bar.
    run = session_start(bot=bot, request=SessionRequest(starting_cash=100_000, duration_minutes=60, seed=5))
    worker = threading.Thread(target=session_execute, args=(run.id,))
    worker.start()
    try:
        for _ in range(500):
            run.refresh_from_db()
            if run.bars_processed >= 1:
                break
            time.sleep(0.01)
        assert run.status == "running"
        response = client.post("/kill-switch", data='{"reason":"drill"}', content_type="application/json",
                               HTTP_AUTHORIZATION=f"Bearer {token}")
        worker.join(5)
        assert not worker.is_alive()
    finally:
        PaperTradingRun.objects.filter(pk=run.pk).update(stop_requested="test over")
        worker.join(5)
    report = response.json()
    assert response.status_code == 200 and report["latched"] is True and report["elapsed_ms"] < 1000
    # Whichever of bots / paper runs first stops the session; the other finds nothing left.
    stopped = [item for s in report["subsystems"] for item in s["stopped"]]
    assert stopped in ([run.id], [f"bot:{bot.pk}"]) and report["stopped"] == 1
    run.refresh_from_db()
    assert run.status == "aborted" and run.status_reason == "kill_switch: drill"
    assert PaperFrame.objects.filter(paper_run=run).last().stage == "session.stopped"
