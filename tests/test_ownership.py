"""Operators kept to their own desk: everyone sees every bot and session, each changes, starts
and stops only their own, staff everything (bots/permissions.py).

alice owns a backtested bot, a spare bot and a queued session; bob is another operator; boss is
staff (is_staff, not superuser). Refusals are 403 `forbidden` with the reason, and change nothing.
"""
from __future__ import annotations

import json
from datetime import date

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.contrib.messages.storage.fallback import FallbackStorage
from django.test import Client, RequestFactory

from bots.models import BacktestRun, Bot
from bots.permissions import bot_may_change, run_may_change
from bots.services import backtest_run, bot_create
from ledger.models import PaperTradingRun, RunStatus
from ledger.services import run_create
from paper.models import ApiToken
from paper.tokens import api_token_create
from risk.models import KillSwitch

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
BOT = {"name": "alice-trend", "strategy": "sma_crossover", "symbols": ["ETH-USD"], "params": {"fast": 10, "slow": 30},
       "risk": {"max_drawdown_pct": 80}}


def _queued(bot, owner):
    config = bot.trading_config()
    return run_create(bot=bot, starting_cash=1000, symbol="ETH-USD", timeframe="1d", data_source="synthetic", seed=1,
                      config_snapshot=config.canonical(), config_hash=config.config_hash, duration_minutes=60,
                      owner=owner)


@pytest.fixture
def desk(sample_data):
    alice = User.objects.create_user("alice")
    bob = User.objects.create_user("bob")
    boss = User.objects.create_user("boss", is_staff=True)
    bot = bot_create(**{k: v for k, v in BOT.items()}, owner=alice)
    backtest_run(bot=bot, start=date(2022, 1, 1), end=date(2023, 12, 31), symbol="ETH-USD")
    spare = bot_create(name="alice-spare", strategy="buy_and_hold", symbols=["ETH-USD"], owner=alice)
    legacy = bot_create(name="legacy", strategy="buy_and_hold", symbols=["ETH-USD"])
    run = _queued(bot, alice)
    return {"alice": alice, "bob": bob, "boss": boss, "bot": bot, "spare": spare, "legacy": legacy, "run": run}


def _api(user) -> Client:
    client = Client()
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {api_token_create(user=user)[1]}"
    return client


def _send(client, method, url, body=None):
    data = "" if body is None else json.dumps(body)
    return getattr(client, method.lower())(url, data=data, content_type="application/json")


def _state(desk) -> dict:
    """What a refused request must leave as it was."""
    return {
        "bots": sorted(Bot.objects.values_list("pk", "name", "config_hash", "params", "owner_id")),
        "backtests": BacktestRun.objects.count(),
        "runs": sorted(PaperTradingRun.objects.values_list("pk", "status", "stop_requested")),
    }


# --- the rule ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("who, bot_owner, may", [
    ("alice", "alice", True),
    ("bob", "alice", False),
    ("boss", "alice", True),
    ("alice", None, False),  # a bot from before owners: staff only (fail closed)
    ("boss", None, True),
    ("inactive-alice", "alice", False),
    ("inactive-boss", "alice", False),
])
def test_the_rule(desk, who, bot_owner, may):
    user = desk[who.removeprefix("inactive-")]
    if who.startswith("inactive-"):
        user.is_active = False
    bot = desk["bot"] if bot_owner else desk["legacy"]
    assert bot_may_change(user, bot) is may


@pytest.mark.parametrize("run_owner, bot_owner, who, may", [
    ("alice", "alice", "alice", True),
    ("alice", "alice", "bob", False),
    ("boss", "alice", "alice", True),  # staff started it on alice's bot: alice may stop it
    ("boss", "alice", "bob", False),
    (None, "alice", "alice", True),  # a replay of alice's bot
    (None, None, "alice", False),  # a replay of a bot from before owners: staff only
    (None, None, "boss", True),
])
def test_who_may_stop_a_session(desk, run_owner, bot_owner, who, may):
    bot = desk["bot"] if bot_owner else desk["legacy"]
    run = _queued(bot, desk[run_owner] if run_owner else None)
    assert run_may_change(desk[who], run) is may


# --- the API ----------------------------------------------------------------------------------------
# Every operation that changes, starts or stops something of alice's, and what it answers when allowed.

CHANGES = [
    ("PUT", "/bots/{bot}", {**BOT, "params": {"fast": 5, "slow": 20}}, 200),
    ("PATCH", "/bots/{bot}", {"name": "renamed"}, 200),
    ("DELETE", "/bots/{spare}", None, 204),
    ("POST", "/bots/{bot}/backtests", {"start": "2022-01-01", "end": "2022-12-31"}, 201),
    ("POST", "/bots/{bot}/paper", {"starting_cash": 1000, "duration_minutes": 5}, 201),
    ("POST", "/paper/{run}/stop", None, 200),
]


def _url(template, desk):
    return template.format(bot=desk["bot"].pk, spare=desk["spare"].pk, run=desk["run"].pk, legacy=desk["legacy"].pk)


@pytest.mark.parametrize("method, url, body, ok", CHANGES, ids=[f"{m} {u}" for m, u, _, _ in CHANGES])
def test_another_operator_is_refused_and_nothing_changes(desk, method, url, body, ok):
    before = _state(desk)
    response = _send(_api(desk["bob"]), method, _url(url, desk), body)
    assert response.status_code == 403, response.content
    refusal = response.json()
    assert refusal["code"] == "forbidden"
    assert "bob may not" in refusal["detail"] and "belongs to alice" in refusal["detail"]
    assert _state(desk) == before


@pytest.mark.parametrize("who", ["alice", "boss"])
@pytest.mark.parametrize("method, url, body, ok", CHANGES, ids=[f"{m} {u}" for m, u, _, _ in CHANGES])
def test_the_owner_and_staff_may(desk, who, method, url, body, ok):
    response = _send(_api(desk[who]), method, _url(url, desk), body)
    assert response.status_code == ok, response.content


def test_the_refusals_are_in_the_schema(client):
    schema = client.get("/openapi.json").json()
    for method, url, _, _ in CHANGES:
        path = url.replace("{bot}", "{bot_id}").replace("{spare}", "{bot_id}").replace("{run}", "{run_id}")
        assert "403" in schema["paths"][path][method.lower()]["responses"], (method, path)
    assert "another operator's bot or session" in schema["paths"]["/bots/{bot_id}"]["put"]["responses"]["403"][
        "description"]


@pytest.mark.parametrize("url", ["/bots", "/bots/{bot}", "/bots/{bot}/backtests", "/paper", "/paper/{run}",
                                 "/paper/{run}/fills", "/paper/{run}/orders", "/paper/{run}/equity",
                                 "/paper/{run}/frames"])
def test_every_operator_sees_the_whole_desk(desk, url):
    response = _api(desk["bob"]).get(_url(url, desk))
    assert response.status_code == 200, response.content


def test_bots_and_sessions_say_whose_they_are(desk):
    bob = _api(desk["bob"])
    assert bob.get(f"/bots/{desk['bot'].pk}").json()["owner"] == "alice"
    assert {b["name"]: b["owner"] for b in bob.get("/bots").json()["items"]} == {
        "alice-trend": "alice", "alice-spare": "alice", "legacy": ""}
    assert bob.get(f"/paper/{desk['run'].pk}").json()["owner"] == "alice"
    assert [r["owner"] for r in bob.get("/paper").json()["items"]] == ["alice"]


def test_what_an_operator_makes_is_theirs(desk):
    bob = _api(desk["bob"])
    created = _send(bob, "POST", "/bots", {**BOT, "name": "bob-trend"})
    assert created.status_code == 201 and created.json()["owner"] == "bob"
    bot_id = created.json()["id"]
    assert _send(bob, "POST", f"/bots/{bot_id}/backtests", {"start": "2022-01-01", "end": "2023-12-31"}).status_code == 201
    started = _send(bob, "POST", f"/bots/{bot_id}/paper", {"starting_cash": 1000, "duration_minutes": 5})
    assert started.status_code == 201, started.content
    run_id = started.json()["paper_run_id"]
    assert PaperTradingRun.objects.get(pk=run_id).owner == desk["bob"]
    assert bob.get(f"/paper/{run_id}").json()["owner"] == "bob"
    # ... and alice, in turn, may not stop it.
    assert _send(_api(desk["alice"]), "POST", f"/paper/{run_id}/stop").status_code == 403
    assert _send(bob, "POST", f"/paper/{run_id}/stop").status_code == 200


@pytest.mark.parametrize("who, status", [("alice", 403), ("bob", 403), ("boss", 200)])
def test_a_bot_from_before_owners_is_for_staff_only(desk, who, status):
    response = _send(_api(desk[who]), "PATCH", f"/bots/{desk['legacy'].pk}", {"name": "legacy-renamed"})
    assert response.status_code == status, response.content
    if status == 403:
        assert "has no owner" in response.json()["detail"] and "only staff" in response.json()["detail"]


def test_a_bots_owner_may_stop_a_session_staff_started_on_it(desk):
    run = _queued(desk["bot"], desk["boss"])
    assert _send(_api(desk["bob"]), "POST", f"/paper/{run.pk}/stop").status_code == 403
    assert _send(_api(desk["alice"]), "POST", f"/paper/{run.pk}/stop").status_code == 200


def test_a_finished_session_of_someone_else_is_refused_too(desk):
    PaperTradingRun.objects.filter(pk=desk["run"].pk).update(status=RunStatus.SUCCESS)
    assert _send(_api(desk["bob"]), "POST", f"/paper/{desk['run'].pk}/stop").status_code == 403


# --- the kill switch stays everyone's -------------------------------------------------------------

@pytest.mark.parametrize("url", ["/kill-switch", "/bots/halt-all", "/paper/stop-all"])
def test_any_operator_may_stop_everything(desk, url):
    response = _send(_api(desk["bob"]), "POST", url, {"reason": "bob saw something"})
    assert response.status_code == 200, response.content
    assert PaperTradingRun.objects.get(pk=desk["run"].pk).status == RunStatus.ABORTED  # alice's session too


def test_only_staff_rearm(desk):
    _send(_api(desk["bob"]), "POST", "/kill-switch", {"reason": "drill"})
    refused = _send(_api(desk["alice"]), "POST", "/kill-switch/rearm")
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    assert KillSwitch.objects.get(pk=1).latched
    assert _send(_api(desk["boss"]), "POST", "/kill-switch/rearm").status_code == 200
    assert not KillSwitch.objects.get(pk=1).latched


# --- tokens: your own, or anyone's for staff ------------------------------------------------------

@pytest.mark.parametrize("who, status", [("bob", 404), ("alice", 200), ("boss", 200)])
def test_a_token_is_revoked_by_its_user_or_staff(desk, who, status):
    token, _ = api_token_create(user=desk["alice"], name="alice's script")
    response = _send(_api(desk[who]), "DELETE", f"/tokens/{token.pk}")
    assert response.status_code == status, response.content
    assert (ApiToken.objects.get(pk=token.pk).revoked_at is not None) is (status == 200)


# --- the dashboard --------------------------------------------------------------------------------

def _browser(user) -> Client:
    """A logged-in client that checks CSRF as a browser session does."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get("/")
    client.token = client.cookies["csrftoken"].value
    return client


def _form_post(client, url, data=None, htmx=False):
    headers = {"HTTP_X_CSRFTOKEN": client.token, **(HTMX if htmx else {})}
    return client.post(url, data or {}, **headers)


BOT_FORM = {"name": "alice-trend", "strategy": "sma_crossover", "symbols": "ETH-USD", "timeframe": "1d",
            "params.fast": "5", "params.slow": "20", "params.exposure": "1"}
DASHBOARD_CHANGES = [
    ("/ui/bots/{bot}/edit/", BOT_FORM, False, 302),
    ("/ui/bots/{bot}/backtest/", {"data_source": "stored", "symbol": "ETH-USD", "starting_cash": "100000",
                                  "seed": "0", "start": "2022-01-01", "end": "2022-12-31"}, True, 200),
    ("/ui/bots/{bot}/paper/", {"starting_cash": "1000", "duration_minutes": "5", "pace": "1",
                               "data_source": "synthetic"}, True, 200),
    ("/ui/sessions/{run}/stop/", None, True, 200),
    ("/ui/bots/{bot}/backtest/", {"data_source": "stored", "symbol": "ETH-USD", "starting_cash": "100000",
                                  "seed": "0"}, False, 302),
    ("/ui/sessions/{run}/stop/", None, False, 302),
]


@pytest.mark.parametrize("url, data, htmx, ok", DASHBOARD_CHANGES,
                         ids=[f"{u} {'htmx' if h else 'form'}" for u, _, h, _ in DASHBOARD_CHANGES])
def test_the_dashboard_refuses_another_operator(desk, url, data, htmx, ok):
    before = _state(desk)
    response = _form_post(_browser(desk["bob"]), _url(url, desk), data, htmx=htmx)
    assert response.status_code == 403
    body = response.content.decode()
    assert 'role="alert"' in body and "bob may not" in body and "belongs to alice" in body
    if not htmx:
        assert "<h1>Not allowed</h1>" in body
    assert _state(desk) == before


@pytest.mark.parametrize("who", ["alice", "boss"])
@pytest.mark.parametrize("url, data, htmx, ok", DASHBOARD_CHANGES,
                         ids=[f"{u} {'htmx' if h else 'form'}" for u, _, h, _ in DASHBOARD_CHANGES])
def test_the_dashboard_lets_the_owner_and_staff(desk, who, url, data, htmx, ok):
    response = _form_post(_browser(desk[who]), _url(url, desk), data, htmx=htmx)
    assert response.status_code == ok, response.content.decode()[:2000]


def test_another_operators_bot_page_says_whose_it_is_and_offers_no_changes(desk):
    bob = _browser(desk["bob"])
    body = bob.get(f"/ui/bots/{desk['bot'].pk}/").content.decode()
    assert '<dd id="bot-owner">alice</dd>' in body
    assert "This bot belongs to <strong>alice</strong>" in body
    assert f'href="/ui/bots/{desk["bot"].pk}/edit/"' not in body
    assert body.count('type="submit" disabled') == 2  # backtest and paper session
    assert bob.get(f"/ui/bots/{desk['bot'].pk}/edit/").status_code == 403
    listing = bob.get("/ui/bots/").content.decode()
    assert "<td>alice</td>" in listing


def test_the_owners_bot_page_offers_the_changes(desk):
    body = _browser(desk["alice"]).get(f"/ui/bots/{desk['bot'].pk}/").content.decode()
    assert '<dd id="bot-owner">alice</dd>' in body and 'id="owner-note"' not in body
    assert f'href="/ui/bots/{desk["bot"].pk}/edit/"' in body
    assert 'type="submit" disabled' not in body


def test_another_operators_session_page_says_who_started_it_and_disables_stop(desk):
    url = f"/ui/sessions/{desk['run'].pk}/"
    body = _browser(desk["bob"]).get(url).content.decode()
    assert '<dd id="run-owner">alice</dd>' in body
    assert "dashboard:session-stop" not in body and f"/ui/sessions/{desk['run'].pk}/stop/" not in body
    assert 'type="button" disabled' in body
    own = _browser(desk["alice"]).get(url).content.decode()
    assert f'hx-post="/ui/sessions/{desk["run"].pk}/stop/"' in own
    assert "by alice" in _browser(desk["bob"]).get("/ui/sessions/").content.decode()


def test_the_dashboard_kill_switch_is_everyones_and_rearm_is_staffs(desk):
    bob = _browser(desk["bob"])
    assert _form_post(bob, "/ui/kill-switch/", htmx=True).status_code == 200
    assert PaperTradingRun.objects.get(pk=desk["run"].pk).status == RunStatus.ABORTED
    assert _form_post(bob, "/ui/kill-switch/rearm/", htmx=True).status_code == 403
    assert _form_post(_browser(desk["boss"]), "/ui/kill-switch/rearm/", htmx=True).status_code == 200


def test_a_new_bot_from_the_dashboard_is_its_authors(desk):
    response = _form_post(_browser(desk["bob"]), "/ui/bots/new/", {**BOT_FORM, "name": "bob-form"})
    assert response.status_code == 302
    assert Bot.objects.get(name="bob-form").owner == desk["bob"]


# --- the admin ------------------------------------------------------------------------------------
# The admin is staff-only (operators get its login page), and staff may change everything, so in
# practice every admin user passes; the admin still asks the rule for each row and each action.

def _admin_request(user):
    request = RequestFactory().post("/admin/")
    request.user = user
    request.session = {}
    request._messages = FallbackStorage(request)
    return request


def test_an_operator_cannot_reach_the_admin(desk):
    bob = Client()
    bob.force_login(desk["bob"])
    for url in (f"/admin/bots/bot/{desk['bot'].pk}/change/", f"/admin/bots/bot/{desk['bot'].pk}/delete/"):
        response = bob.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    response = bob.post(f"/admin/bots/bot/{desk['bot'].pk}/delete/", {"post": "yes"})
    assert response.status_code == 302 and Bot.objects.filter(pk=desk["bot"].pk).exists()


@pytest.mark.parametrize("who, may", [("bob", False), ("alice", True)])
def test_the_admin_asks_the_rule_for_each_bot(desk, who, may):
    user = desk[who]
    User.objects.filter(pk=user.pk).update(is_superuser=True)  # model permissions aside: only the rule decides
    user.is_superuser = True
    user.is_staff = False  # an admin user who is not staff in the desk's sense
    bot_admin = admin.site._registry[Bot]
    request = _admin_request(user)
    assert bot_admin.has_change_permission(request, desk["bot"]) is may
    assert bot_admin.has_delete_permission(request, desk["bot"]) is may
    assert bot_admin.has_change_permission(request) is True  # the changelist itself


def test_admin_actions_skip_the_rows_the_user_may_not_change(desk):
    bob = desk["bob"]
    bob.is_superuser = True  # reaches the actions; not staff in the desk's sense
    mine = bot_create(name="bob-own", strategy="buy_and_hold", symbols=["ETH-USD"], owner=bob)
    bob_run = _queued(mine, bob)
    backtests = BacktestRun.objects.count()
    request = _admin_request(bob)
    admin.site._registry[Bot].backtest_bots(request, Bot.objects.filter(pk__in=[desk["bot"].pk, mine.pk]))
    assert BacktestRun.objects.count() == backtests + 1 and BacktestRun.objects.filter(bot=mine).exists()
    admin.site._registry[PaperTradingRun].stop_sessions(request, PaperTradingRun.objects.all())
    assert PaperTradingRun.objects.get(pk=desk["run"].pk).status == RunStatus.QUEUED
    assert PaperTradingRun.objects.get(pk=bob_run.pk).status == RunStatus.ABORTED
    said = [str(m) for m in request._messages]
    assert any("alice-trend: skipped, it belongs to alice" in m for m in said)
    assert any("skipped 1 session(s) you may not stop" in m for m in said)


def test_staff_change_anyones_bot_in_the_admin_and_see_the_owner(desk):
    root = User.objects.create_superuser("root", "root@example.com", "pw-123456")
    client = Client()
    client.force_login(root)
    page = client.get(f"/admin/bots/bot/{desk['bot'].pk}/change/")
    assert page.status_code == 200 and b'name="_save"' in page.content
    assert b"alice" in client.get("/admin/bots/bot/").content
    assert b"alice" in client.get("/admin/ledger/papertradingrun/").content
    response = client.post("/admin/ledger/papertradingrun/", {
        "action": "stop_sessions", "_selected_action": [desk["run"].pk]})
    assert response.status_code == 302
    assert PaperTradingRun.objects.get(pk=desk["run"].pk).status == RunStatus.ABORTED
    assert client.get("/admin/bots/bot/add/").context["adminform"].form.initial["owner"] == root.pk


# --- the demo -------------------------------------------------------------------------------------

def test_the_demo_bot_is_the_demo_operators(sample_data):
    from paper.demo import DEMO_BOT, demo_bot_ensure

    made_by_manage_py_demo = bot_create(**DEMO_BOT)  # before `serve` made the operator: nobody's
    operator = User.objects.create_user("operator", is_staff=True, is_superuser=True)
    bot, _ = demo_bot_ensure(owner=operator)
    assert bot.pk == made_by_manage_py_demo.pk and Bot.objects.get(pk=bot.pk).owner == operator
