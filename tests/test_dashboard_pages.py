"""The dashboard's pages: each one wants a logged-in operator and renders the ledger, the bots and
the runbook's computations (Django's test client; no browser)."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from ledger.models import PaperTradingRun
from ledger.services import frames_record, run_create, run_persist
from paper import artifact_contract
from paper.templatetags import dashboard
from tests.runbook_fixtures import FAILED, HALTED, paper_root_build

pytestmark = pytest.mark.django_db

LOGIN = "/ui/login/"


@pytest.fixture
def operator():
    return User.objects.create_user("operator", password="paper-demo")


@pytest.fixture
def bot_owner(operator):
    """The logged-in operator owns demo_bot (tests/test_ownership.py: others' bots are read-only)."""
    return operator


@pytest.fixture
def browser(client, operator):
    client.force_login(operator)
    return client


def _run(bot, *, data_source="stored", **fields) -> PaperTradingRun:
    config = bot.trading_config()
    run = run_create(bot=bot, starting_cash=100_000, symbol="ETH-USD", timeframe=bot.timeframe,
                     data_source=data_source, seed=7, config_snapshot=config.canonical(),
                     config_hash=config.config_hash, duration_minutes=60, pace=60)
    if fields:
        PaperTradingRun.objects.filter(pk=run.pk).update(**fields)
        run.refresh_from_db()
    return run


@pytest.fixture
def ended_run(demo_bot, eth_bars):
    """A run persisted from 400 real ETH-USD bars, ended by a risk halt, with frames and artifacts."""
    result = demo_bot.trading_config().build_engine(starting_cash=100_000, seed=0).run(eth_bars.slice(0, 400))
    run = _run(demo_bot)
    run_persist(run=run, result=result, status="aborted", status_reason="risk_halt: max_drawdown_pct breached")
    frames_record(run=run, frames=[
        {"task_id": run.id, "stage": "session.started", "message": "ETH-USD 1d (stored), 400 bars",
         "timestamp": "2026-11-21T09:15:00+00:00", "seq": 1, "equity": 100_000.0, "positions": {}},
        {"task_id": run.id, "stage": "session.stopped", "message": "session aborted: risk_halt",
         "timestamp": "2026-11-21T09:16:00+00:00", "seq": 2, "equity": result.final_equity, "positions": {}},
    ])
    return run, result


def _pages(run_id: str, bot_id: int) -> list[str]:
    return [
        "/", "/ui/sessions/", f"/ui/sessions/{run_id}/", "/ui/bots/", "/ui/bots/new/", f"/ui/bots/{bot_id}/",
        f"/ui/bots/{bot_id}/edit/", "/ui/health/", "/ui/alerts/", "/ui/promotion/",
        "/ui/fragments/topbar-status/", "/ui/fragments/sessions-rows/", "/ui/fragments/strategy-params/",
        f"/ui/sessions/{run_id}/artifacts/{artifact_contract.REPORT}",
    ]


def _actions(run_id: str, bot_id: int) -> list[str]:
    return ["/ui/kill-switch/", "/ui/kill-switch/rearm/", f"/ui/sessions/{run_id}/stop/",
            f"/ui/bots/{bot_id}/backtest/", f"/ui/bots/{bot_id}/paper/"]


def test_it_sends_anonymous_users_to_the_login_page(client, ended_run):
    run, _ = ended_run
    for url in _pages(run.id, run.bot_id):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(f"{LOGIN}?next="), url
    for url in _actions(run.id, run.bot_id):
        response = client.post(url)
        assert response.status_code == 302 and response["Location"].startswith(LOGIN), url


def test_it_sends_an_htmx_call_without_a_session_to_the_login_page_whole(client):
    response = client.get("/ui/fragments/sessions-rows/", HTTP_HX_REQUEST="true",
                          HTTP_HX_CURRENT_URL="http://testserver/ui/sessions/?status=running")
    assert response.status_code == 401
    assert response["HX-Redirect"] == f"{LOGIN}?next=%2Fui%2Fsessions%2F"


def test_it_renders_every_page_for_an_operator(browser, ended_run, settings):
    run, _ = ended_run
    folder = settings.OUTPUTS_DIR / "paper_sessions" / run.id
    folder.mkdir(parents=True)
    (folder / artifact_contract.REPORT).write_text('{"session_id": "x"}')
    for url in _pages(run.id, run.bot_id):
        assert browser.get(url).status_code == 200, url


def test_it_logs_in_at_ui_login_and_out_again(client, operator):
    page = client.get(LOGIN)
    assert page.status_code == 200 and b'name="password"' in page.content
    response = client.post(LOGIN, {"username": "operator", "password": "paper-demo"})
    assert response.status_code == 302 and response["Location"] == "/"
    home = client.get("/")
    assert home.status_code == 200 and b"Kill switch" in home.content and b"Log out" in home.content
    assert client.post("/ui/logout/")["Location"] == LOGIN
    assert client.get("/").status_code == 302


def test_it_refuses_a_wrong_password_on_the_login_page(client, operator):
    response = client.post(LOGIN, {"username": "operator", "password": "nope"})
    assert response.status_code == 200 and b"correct username and password" in response.content


def test_the_top_bar_shows_counts_and_the_kill_switch_on_every_page(browser, demo_bot):
    _run(demo_bot, status="running")
    _run(demo_bot, status="queued")
    body = browser.get("/ui/bots/").content.decode()
    assert 'data-count="running">1<' in body and 'data-count="queued">1<' in body
    assert 'data-count="alerts">0<' in body
    assert 'hx-confirm="Stop every session and latch the kill switch?"' in body
    assert 'hx-trigger="every 5s"' in body
    assert '"X-CSRFToken": "' in body  # every HTMX request carries the CSRF token
    assert "/static/vendor/htmx.min.js" in body and "cdn" not in body.lower()


def test_the_sessions_list_marks_halts_kill_switch_aborts_and_synthetic_data(browser, demo_bot):
    _run(demo_bot, status="aborted", status_reason="risk_halt: max_drawdown_pct breached")
    _run(demo_bot, status="aborted", status_reason="kill_switch: fired by ops")
    _run(demo_bot, data_source="synthetic", status="running")
    body = browser.get("/").content.decode()
    assert ">risk halt</span>" in body and ">kill switch</span>" in body and ">synthetic</span>" in body
    rows = browser.get("/ui/fragments/sessions-rows/").content.decode()
    assert rows.count("<tr class=\"status-") == 3
    assert 'hx-trigger="every 2s"' in rows


def test_the_sessions_list_filters_by_status_bot_and_date(browser, demo_bot):
    done = _run(demo_bot, status="success", status_reason="completed")
    old = _run(demo_bot, status="running", started_at=timezone.now() - timedelta(days=3))
    assert done.id in browser.get("/?status=success").content.decode()
    assert old.id not in browser.get("/?status=success").content.decode()
    day = (timezone.now() - timedelta(days=3)).date().isoformat()
    body = browser.get(f"/ui/fragments/sessions-rows/?date={day}&bot={demo_bot.pk}").content.decode()
    assert old.id in body and done.id not in body
    assert f"?date={day}&amp;bot={demo_bot.pk}" in body  # the poll keeps the filters
    assert "Enter a valid date" in browser.get("/?date=yesterday").content.decode()


def test_the_empty_sessions_list_says_what_to_do_next(browser):
    body = browser.get("/").content.decode()
    assert "No paper sessions yet." in body and 'href="/ui/bots/"' in body and "run a backtest" in body
    assert "No session matches these filters" in browser.get("/?status=failed").content.decode()


def test_the_session_page_shows_everything_from_the_ledger_after_the_end(browser, ended_run):
    run, result = ended_run
    response = browser.get(f"/ui/sessions/{run.id}/")
    body = response.content.decode()
    assert ">risk halt</span>" in body and "risk_halt: max_drawdown_pct breached" in body
    assert f'data-ws-path="/ws/paper/{run.id}"' in body and 'data-terminal="true"' in body
    assert "Stop session" not in body  # nothing to stop any more
    points = response.context["chart_points"]
    assert len(points) == 400 and points[-1]["value"] == pytest.approx(result.final_equity)
    assert 'id="equity-points"' in body and 'id="fill-markers"' in body
    assert len(response.context["fill_markers"]) == min(200, result.num_fills) > 0
    assert result.fills[-1].fill_id in body  # the fills table, newest first
    assert "session.stopped" in body and 'data-last-seq="2"' in body  # the stored frames
    assert "sharpe" in body and "max drawdown" in body
    assert f"{run.num_fills:,}" in body
    assert "(not written yet)" in body  # artifacts not written for this run


def test_a_running_session_has_a_stop_button_and_a_live_socket(browser, demo_bot):
    run = _run(demo_bot, data_source="synthetic", status="running")
    body = browser.get(f"/ui/sessions/{run.id}/").content.decode()
    assert f'hx-post="/ui/sessions/{run.id}/stop/"' in body and 'data-terminal="false"' in body
    assert "synthetic prices (seed 7)" in body
    assert "lightweight-charts.standalone.production.js" in body


def test_an_unknown_session_or_bot_is_a_404_page(browser):
    response = browser.get("/ui/sessions/20990101T000000Z-00000000/")
    assert response.status_code == 404 and b"There is no paper session" in response.content
    assert browser.get("/ui/bots/999/").status_code == 404


def test_the_bot_page_shows_its_gate_backtests_and_equity_chart(browser, demo_bot, sample_data):
    from bots.services import backtest_run

    body = browser.get(f"/ui/bots/{demo_bot.pk}/").content.decode()
    assert "Paper gate refuses (no_backtest)" in body and "No backtests yet" in body
    backtest = backtest_run(bot=demo_bot)
    response = browser.get(f"/ui/bots/{demo_bot.pk}/")
    body = response.content.decode()
    assert "Paper gate passes" in body and f"Latest: backtest {backtest.pk}" in body
    assert 'data-equity-chart="backtest-points"' in body
    assert len(response.context["latest_points"]) == len(backtest.equity)


def test_the_bots_list_shows_each_gate_and_an_empty_state(browser):
    assert b"No bots yet." in browser.get("/ui/bots/").content


def test_health_alerts_and_promotion_show_the_runbook_computations(browser, settings):
    paper_root_build(settings.OUTPUTS_DIR / "paper_sessions")
    health = browser.get("/ui/health/").content.decode()
    assert "10 sessions by status" in health and FAILED in health
    alerts = browser.get("/ui/alerts/").content.decode()
    assert "PAPER_SESSION_FAILED" in alerts and "PAPER_SESSION_ABORTED" in alerts and HALTED in alerts
    assert 'value="60.0"' in alerts or 'value="60"' in alerts
    stale = browser.get("/ui/alerts/?stale_minutes=1").content.decode()
    assert "PAPER_SESSION_STALE" in stale
    bad = browser.get("/ui/alerts/?stale_minutes=-5").content.decode()
    assert "Ensure this value is greater than or equal to 0.01" in bad and "showing 60 min" in bad
    promotion = browser.get("/ui/promotion/").content.decode()
    assert "Ready" in promotion and "Blocked" in promotion and "risk halt" in promotion
    assert "Ensure this value is less than or equal to 1" in browser.get("/ui/promotion/?max_drawdown=5").content.decode()


def test_the_runbook_pages_create_a_missing_artifact_root(browser, settings):
    assert not (settings.OUTPUTS_DIR / "paper_sessions").exists()
    assert b"No session folders yet" in browser.get("/ui/health/").content
    assert (settings.OUTPUTS_DIR / "paper_sessions").is_dir()


def test_times_money_and_quantities_are_formatted():
    moment = timezone.now() - timedelta(minutes=3)
    text = str(dashboard.when(moment))
    assert f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC" in text and "(3 min ago)" in text
    assert "(2 h ago)" in str(dashboard.when((timezone.now() - timedelta(hours=2)).isoformat()))
    assert dashboard.relative(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC)) == "just now"
    assert dashboard.when(None) == "—"
    assert dashboard.money(1234.5) == "1,234.50" and dashboard.money(None) == "—"
    assert dashboard.pnl(-12) == "-12.00" and dashboard.pnl(3) == "+3.00"
    assert dashboard.qty(0.5) == "0.5" and dashboard.qty(1234.123456789) == "1,234.12345679"
    assert dashboard.price(3012.5) == "3,012.50" and dashboard.price(0.12345) == "0.1235"
    assert dashboard.pct(0.1234) == "12.34%" and dashboard.metric(0.2, "max_drawdown") == "20.00%"
    assert dashboard.metric(12, "num_trades") == "12" and dashboard.metric(1.23456, "sharpe") == "1.23"
    assert dashboard.duration(3725) == "1h 02m 05s" and dashboard.duration(None) == "—" and dashboard.money(float("nan")) == "—"
