"""The admin: ledger rows are read-only; bots and runs have working changelists with search."""
from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from ledger.models import PaperTradingRun
from ledger.services import run_create, run_persist

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    User.objects.create_superuser("root", "root@example.com", "pw-123456")
    client.login(username="root", password="pw-123456")
    return client


@pytest.fixture
def run(demo_bot, eth_bars):
    config = demo_bot.trading_config()
    result = config.build_engine(starting_cash=10_000, seed=0).run(eth_bars.slice(0, 300))
    run = run_create(bot=demo_bot, starting_cash=10_000, symbol="ETH-USD", timeframe="1d", data_source="stored",
                     seed=0, config_snapshot=config.canonical(), config_hash=config.config_hash)
    return run_persist(run=run, result=result, status="success", status_reason="completed")


@pytest.mark.parametrize("model", ["papertradingrun", "paperfill", "paperorder", "paperequitypoint"])
def test_ledger_rows_cannot_be_added_changed_or_deleted(staff_client, run, model):
    base = f"/admin/ledger/{model}/"
    assert staff_client.get(base).status_code == 200
    assert staff_client.get(base + "add/").status_code == 403
    obj = run if model == "papertradingrun" else getattr(run, {"paperfill": "fills", "paperorder": "orders",
                                                                "paperequitypoint": "equity_points"}[model]).first()
    page = staff_client.get(f"{base}{obj.pk}/change/")
    assert page.status_code == 200  # viewable
    assert b'name="_save"' not in page.content  # but no save button
    assert staff_client.post(f"{base}{obj.pk}/delete/", {"post": "yes"}).status_code == 403
    assert PaperTradingRun.objects.filter(pk=run.pk).exists()


def test_runs_are_searchable_by_id(staff_client, run):
    page = staff_client.get("/admin/ledger/papertradingrun/", {"q": run.id})
    assert run.id.encode() in page.content


def test_bots_changelist_shows_latest_sharpe(staff_client, demo_bot, sample_data):
    from datetime import date

    from bots.services import backtest_run

    bt = backtest_run(bot=demo_bot, start=date(2022, 1, 1), end=date(2022, 12, 31))
    page = staff_client.get("/admin/bots/bot/")
    assert page.status_code == 200 and f"{bt.sharpe:.3f}".encode() in page.content


def test_the_admin_stops_the_selected_sessions(staff_client, demo_bot):
    run = run_create(bot=demo_bot, starting_cash=1000, symbol="ETH-USD", timeframe="1d", data_source="synthetic",
                     seed=0, config_snapshot={}, config_hash="x")
    response = staff_client.post("/admin/ledger/papertradingrun/",
                                 {"action": "stop_sessions", "_selected_action": [run.pk]}, follow=True)
    run.refresh_from_db()
    assert run.status == "aborted" and run.status_reason.startswith("operator_stop: stopped from the admin")
    assert b"stopped 1 session" in response.content.lower()


def test_the_admin_backtests_the_selected_bots(staff_client, demo_bot, sample_data):
    response = staff_client.post("/admin/bots/bot/", {"action": "backtest_bots", "_selected_action": [demo_bot.pk]},
                                 follow=True)
    assert demo_bot.backtest_runs.count() == 1
    assert b"sharpe" in response.content


def test_admin_rows_link_to_the_dashboard(staff_client, run, demo_bot):
    assert f'href="/ui/sessions/{run.pk}/"'.encode() in staff_client.get("/admin/ledger/papertradingrun/").content
    assert f'href="/ui/bots/{demo_bot.pk}/"'.encode() in staff_client.get("/admin/bots/bot/").content
