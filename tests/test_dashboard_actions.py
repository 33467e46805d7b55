"""The dashboard's actions: CSRF on every POST, the kill switch and re-arm, the bot form, backtests,
starting and stopping sessions, and the artifact files (Django's test client)."""
from __future__ import annotations

import json
import os

import pytest
from django.contrib.auth.models import User
from django.test import Client

from bots.models import Bot
from ledger.models import PaperTradingRun
from ledger.services import run_create
from paper import artifact_contract as c
from risk.models import KillSwitch
from risk.services import kill_switch_fire

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


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


@pytest.fixture
def csrf_browser(operator):
    """A client that checks CSRF like a browser session does; `token` is the page's token."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    client.get("/")  # the page that renders the token sets the cookie
    client.token = client.cookies["csrftoken"].value
    return client


def _queued_run(bot, **fields) -> PaperTradingRun:
    config = bot.trading_config()
    run = run_create(bot=bot, starting_cash=100_000, symbol="ETH-USD", timeframe=bot.timeframe,
                     data_source="synthetic", seed=1, config_snapshot=config.canonical(),
                     config_hash=config.config_hash, duration_minutes=60)
    if fields:
        PaperTradingRun.objects.filter(pk=run.pk).update(**fields)
    return run


def _latched() -> bool:
    return KillSwitch.objects.filter(pk=1, latched=True).exists()


# --- CSRF ------------------------------------------------------------------------------------------

def test_a_post_without_the_csrf_token_is_refused(csrf_browser, demo_bot):
    run = _queued_run(demo_bot)
    for url in ("/ui/kill-switch/", "/ui/kill-switch/rearm/", f"/ui/sessions/{run.id}/stop/",
                f"/ui/bots/{demo_bot.pk}/paper/", f"/ui/bots/{demo_bot.pk}/backtest/", "/ui/bots/new/",
                "/ui/logout/"):
        refused = csrf_browser.post(url, **HTMX)
        assert refused.status_code == 403, url
        # the reason, in the fragment the dashboard shows at the top of the page (app.js)
        assert refused.content.decode().strip() == (
            '<p class="error" role="alert">The server refused the request: the page&#x27;s security token (CSRF) '
            'is missing or stale. Reload the page and try again.</p>'), url
    assert not _latched()
    assert PaperTradingRun.objects.get(pk=run.pk).status == "queued"
    # a plain form POST (no HTMX) and the admin keep Django's own page
    plain = csrf_browser.post("/ui/kill-switch/")
    assert plain.status_code == 403 and b"CSRF verification failed" in plain.content
    assert not _latched()


# --- the kill switch -------------------------------------------------------------------------------

def test_the_kill_switch_latches_shows_the_banner_everywhere_and_rearms(csrf_browser, operator, demo_bot):
    User.objects.filter(pk=operator.pk).update(is_staff=True)  # re-arming needs staff (test_auth_matrix)
    run = _queued_run(demo_bot)
    fired = csrf_browser.post("/ui/kill-switch/", HTTP_X_CSRFTOKEN=csrf_browser.token, **HTMX)
    assert fired.status_code == 200 and _latched()
    report = fired.content.decode()
    assert "Kill switch fired:" in report and " ms" in report and run.id in report
    assert 'id="topbar-status"' in report and 'hx-swap-oob="true"' in report  # the top bar turns at once
    assert PaperTradingRun.objects.get(pk=run.pk).status == "aborted"
    for url in ("/", "/ui/bots/", "/ui/health/", "/ui/fragments/topbar-status/"):
        body = csrf_browser.get(url).content.decode()
        assert "Kill switch latched" in body and "Re-arm" in body, url
    rearmed = csrf_browser.post("/ui/kill-switch/rearm/", HTTP_X_CSRFTOKEN=csrf_browser.token, **HTMX)
    assert rearmed.status_code == 200 and not _latched()
    assert "Kill switch latched" not in rearmed.content.decode()
    assert "kill switch armed" in csrf_browser.get("/").content.decode()


def test_a_plain_form_post_to_the_kill_switch_returns_to_the_page(browser, operator):
    User.objects.filter(pk=operator.pk).update(is_staff=True)  # re-arming needs staff (test_auth_matrix)
    response = browser.post("/ui/kill-switch/", HTTP_REFERER="http://testserver/ui/bots/")
    assert response.status_code == 302 and response["Location"] == "http://testserver/ui/bots/"
    assert _latched()
    assert browser.post("/ui/kill-switch/rearm/", HTTP_REFERER="https://evil.example/")["Location"] == "/"


def test_the_stop_button_stops_a_session(browser, demo_bot):
    run = _queued_run(demo_bot)
    response = browser.post(f"/ui/sessions/{run.id}/stop/", **HTMX)
    assert response.status_code == 200 and f"Stopped {run.id} in" in response.content.decode()
    run.refresh_from_db()
    assert run.status == "aborted" and run.status_reason == "operator_stop: stopped by operator"
    again = browser.post(f"/ui/sessions/{run.id}/stop/", **HTMX)
    assert b"already aborted" in again.content
    assert browser.post("/ui/sessions/nope/stop/", **HTMX).status_code == 404


# --- the bot form ----------------------------------------------------------------------------------

def _bot_post(**overrides) -> dict:
    post = {"name": "eth-trend", "strategy": "sma_crossover", "symbols": "ETH-USD, BTC-USD", "timeframe": "1d",
            "params.fast": "20", "params.slow": "50", "params.exposure": "1", "risk.max_drawdown_pct": "25",
            "risk.max_orders_per_minute": "10"}
    post.update(overrides)
    return post


def test_the_bot_form_shows_each_validation_message_next_to_its_field(browser):
    response = browser.post("/ui/bots/new/", _bot_post(**{
        "params.fast": "50", "params.slow": "20", "symbols": "eth usd", "risk.max_leverage": "-1",
        "execution.taker_fee_bps": "abc"}))
    assert response.status_code == 422 and not Bot.objects.exists()
    form = response.context["form"]
    assert form.errors["execution.taker_fee_bps"] == ["Enter a number."]  # the form reads types first
    response = browser.post("/ui/bots/new/", _bot_post(**{
        "params.fast": "50", "params.slow": "20", "symbols": "eth", "risk.max_leverage": "-1"}))
    form = response.context["form"]
    assert form.errors["params.slow"] == ["fast must be smaller than slow"]
    assert "invalid symbol 'eth'" in form.errors["symbols"][0]
    assert form.errors["risk.max_leverage"] == ["Input should be greater than 0"]
    body = response.content.decode()
    assert 'id="id_params.slow_error">fast must be smaller than slow<' in body
    assert 'value="50"' in body  # what the operator typed stays in the form


def test_the_bot_form_creates_a_bot_when_valid(browser):
    response = browser.post("/ui/bots/new/", _bot_post())
    bot = Bot.objects.get(name="eth-trend")
    assert response.status_code == 302 and response["Location"] == f"/ui/bots/{bot.pk}/"
    assert bot.params == {"fast": 20, "slow": 50, "exposure": 1.0}
    assert bot.symbols == ["ETH-USD", "BTC-USD"] and bot.risk == {"max_drawdown_pct": 25.0, "max_orders_per_minute": 10}
    duplicate = browser.post("/ui/bots/new/", _bot_post())
    assert duplicate.context["form"].errors["name"] == ["Bot with this Name already exists."]


def test_the_edit_form_starts_from_the_bot_and_saves_changes(browser, demo_bot):
    page = browser.get(f"/ui/bots/{demo_bot.pk}/edit/").content.decode()
    assert 'name="params.fast"' in page and 'value="10"' in page and 'value="80.0"' in page
    response = browser.post(f"/ui/bots/{demo_bot.pk}/edit/", _bot_post(name="demo", **{"params.fast": "5"}))
    assert response.status_code == 302
    demo_bot.refresh_from_db()
    assert demo_bot.params["fast"] == 5 and demo_bot.params["slow"] == 50


def test_changing_the_strategy_rebuilds_the_params_fields_from_its_schema(browser):
    form = browser.get("/ui/bots/new/").content.decode()
    assert 'hx-get="/ui/fragments/strategy-params/"' in form and 'hx-target="#params-fieldset"' in form
    fieldset = browser.get("/ui/fragments/strategy-params/?strategy=rsi_mean_reversion", **HTMX).content.decode()
    assert '<fieldset id="params-fieldset">' in fieldset
    for name in ("params.window", "params.oversold", "params.overbought", "params.exposure"):
        assert f'name="{name}"' in fieldset
    assert 'name="params.fast"' not in fieldset and "Cutler" in fieldset


# --- backtests and paper sessions ----------------------------------------------------------------

def test_starting_a_session_without_a_backtest_shows_the_gate_refusal_inline(browser, demo_bot):
    post = {"starting_cash": "100000", "duration_minutes": "60", "pace": "60", "symbol": "ETH-USD",
            "data_source": "synthetic"}
    response = browser.post(f"/ui/bots/{demo_bot.pk}/paper/", post, **HTMX)
    body = response.content.decode()
    assert response.status_code == 409 and 'id="paper-panel"' in body
    assert "The paper gate refused this session." in body and "The bot has no backtest: run a backtest first" in body
    assert 'data-condition="no_backtest"' in body and not PaperTradingRun.objects.exists()
    # Without HTMX the whole page comes back, with the same words.
    page = browser.post(f"/ui/bots/{demo_bot.pk}/paper/", post)
    assert page.status_code == 409 and b"The paper gate refused this session." in page.content


def test_starting_a_session_while_the_kill_switch_is_latched_says_so(browser, demo_bot):
    kill_switch_fire(reason="drill")
    post = {"starting_cash": "100000", "duration_minutes": "60", "pace": "1", "data_source": "synthetic"}
    response = browser.post(f"/ui/bots/{demo_bot.pk}/paper/", post, **HTMX)
    assert response.status_code == 423 and b"The kill switch is latched." in response.content
    assert b"Re-arm the kill switch in the top bar" in response.content


def test_bad_session_input_is_shown_next_to_its_field(browser, demo_bot):
    post = {"starting_cash": "-5", "duration_minutes": "abc", "pace": "1", "data_source": "synthetic"}
    response = browser.post(f"/ui/bots/{demo_bot.pk}/paper/", post, **HTMX)
    assert response.status_code == 422
    assert response.context["session_form"].errors["duration_minutes"] == ["Enter a number."]
    post["duration_minutes"] = "60"
    response = browser.post(f"/ui/bots/{demo_bot.pk}/paper/", post, **HTMX)
    assert response.context["session_form"].errors["starting_cash"] == ["starting_cash must be a positive number"]


def test_a_backtest_shows_its_metrics_then_the_gate_lets_a_session_start(browser, demo_bot, sample_data):
    response = browser.post(f"/ui/bots/{demo_bot.pk}/backtest/",
                            {"data_source": "stored", "symbol": "ETH-USD", "starting_cash": "100000", "seed": "0"}, **HTMX)
    body = response.content.decode()
    assert response.status_code == 200 and "Latest: backtest" in body and "sharpe" in body
    assert 'id="bot-gate" class="callout callout-ok" hx-swap-oob="true"' in body  # the gate turns at once
    assert 'data-equity-chart="backtest-points"' in body
    assert '<div id="paper-refusal" hx-swap-oob="true">' in body  # an earlier refusal is cleared
    started = browser.post(f"/ui/bots/{demo_bot.pk}/paper/",
                           {"starting_cash": "50000", "duration_minutes": "5", "pace": "60", "data_source": "synthetic"},
                           **HTMX)
    run = PaperTradingRun.objects.get()
    assert started.status_code == 200 and started["HX-Redirect"] == f"/ui/sessions/{run.id}/"
    assert run.starting_cash == 50_000 and run.pace == 60 and run.data_source == "synthetic"


def test_a_backtest_refusal_is_shown_in_the_backtest_form(browser, demo_bot):
    response = browser.post(f"/ui/bots/{demo_bot.pk}/backtest/",
                            {"data_source": "stored", "symbol": "ETH-USD", "starting_cash": "100000", "seed": "0"}, **HTMX)
    assert response.status_code == 422 and b"no stored bars" in response.content.lower()


# --- artifact files --------------------------------------------------------------------------------

@pytest.fixture
def artifact_run(demo_bot, settings):
    run = _queued_run(demo_bot, status="success", status_reason="completed")
    root = settings.OUTPUTS_DIR / "paper_sessions"
    folder = root / run.id
    (folder / c.ARTIFACTS_DIR).mkdir(parents=True)
    (folder / c.REPORT).write_text(json.dumps({"session_id": run.id}))
    (folder / c.TRADES).write_text("fill_id,order_id\n")
    (folder / c.RUN_REPORT).write_text("# report\n")
    (folder / c.EQUITY_PNG).write_bytes(b"\x89PNG\r\n\x1a\n")
    (folder / "notes.txt").write_text("not an artifact")
    (root / "secret.json").write_text('{"secret": true}')
    return run, folder


def test_the_artifact_view_serves_the_canonical_files_with_their_types(browser, artifact_run):
    run, _ = artifact_run
    base = f"/ui/sessions/{run.id}/artifacts/"
    expected = {c.REPORT: "application/json", c.TRADES: "text/csv; charset=utf-8",
                c.RUN_REPORT: "text/markdown; charset=utf-8", c.EQUITY_PNG: "image/png"}
    for name, content_type in expected.items():
        response = browser.get(base + name)
        assert response.status_code == 200 and response["Content-Type"] == content_type, name
    assert json.loads(b"".join(browser.get(base + c.REPORT).streaming_content)) == {"session_id": run.id}
    page = browser.get(f"/ui/sessions/{run.id}/").content.decode()
    assert f'href="{base}{c.REPORT}"' in page and f"{c.DRAWDOWN_PNG} (not written yet)" in page


def test_the_artifact_view_refuses_other_files_and_path_traversal(browser, artifact_run, demo_bot):
    run, folder = artifact_run
    base = f"/ui/sessions/{run.id}/artifacts/"
    for name in ("notes.txt", "../secret.json", "artifacts/../../secret.json", "%2e%2e/secret.json",
                 "..%2Fsecret.json", "/etc/passwd", "artifacts", c.DRAWDOWN_PNG):
        response = browser.get(base + name)
        assert response.status_code == 404, name
        assert b'"secret": true' not in b"".join(getattr(response, "streaming_content", [response.content]))
    assert browser.get(f"/ui/sessions/../artifacts/{c.REPORT}").status_code == 404
    assert browser.get(f"/ui/sessions/20990101T000000Z-00000000/artifacts/{c.REPORT}").status_code == 404
    # A canonical name that leads out of the session folder (a symlink) is refused too.
    (folder / c.METRICS).symlink_to(folder.parent / "secret.json")
    assert os.path.islink(folder / c.METRICS)
    assert browser.get(base + c.METRICS).status_code == 404
