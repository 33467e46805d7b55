"""The auth matrix: every URL pattern and WebSocket route, as anonymous, operator and staff.

The policy:
- anonymous: the API answers 401 JSON; dashboard pages redirect to /ui/login/ (an HTMX request
  gets 401 with HX-Redirect to the login page); the admin redirects to its login; sockets are
  refused. Public: /ui/login/, /docs, /openapi.json and /static/.
- operator (an active user, not staff): the whole API and dashboard, except re-arming the kill
  switch (403 `forbidden`, with the reason; firing it is never blocked). Not the admin. The
  world's bots are the operator's: changing others' bots and sessions is tests/test_ownership.py.
- staff (is_staff; here also superuser, so the admin's model permissions do not hide a page):
  everything.
- Session-authenticated unsafe requests need the CSRF token (403 without it), on the dashboard
  and on the API alike; API tokens need none. A revoked token, or the token of an inactive user,
  is 401.

Every request runs in a savepoint that is rolled back, so each row meets the same database. The
table is explicit: the routes walked (Django's URL resolver for config.urls, the API's OpenAPI
operations, the WebSocket routes) must equal the routes in the table, so a new route without a
row fails here until someone decides who may use it.
"""
from __future__ import annotations

import json
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib import admin
from django.contrib.auth.models import User
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.utils import timezone

ANON, OPERATOR, STAFF = "anonymous", "operator", "staff"
ROLES = (ANON, OPERATOR, STAFF)
LOGIN = "login"  # expected: 302 to /ui/login/?next=...
ADMIN_LOGIN = "admin-login"  # expected: 302 to /admin/login/?next=...
LOGGED_OUT = "logged out"  # expected: 302 to /ui/login/ (logging out)
CSRF_SECRET = "matrixcsrfsecret0123456789abcdef"  # a 32-character CSRF secret, as Django's cookie holds
HTMX = {"HTTP_HX_REQUEST": "true"}


@dataclass(frozen=True)
class Row:
    """One request and the status each role gets. `route` is the URL pattern it exercises."""

    route: str
    method: str
    url: str
    anonymous: int | str
    operator: int | str
    staff: int | str
    body: dict | str | None = None
    htmx: bool = False
    note: str = ""
    tags: tuple = field(default=())

    def expected(self, role: str):
        return getattr(self, role)


def api(route, method, url, operator, staff=None, body=None, note=""):
    """An API operation: anonymous callers always get 401 JSON."""
    return Row(route, method, url, 401, operator, operator if staff is None else staff, body=body, note=note,
               tags=("api",))


def page(route, url, operator=200, staff=None, anonymous=LOGIN):
    return Row(route, "GET", url, anonymous, operator, operator if staff is None else staff, tags=("dashboard",))


def action(route, url, operator, staff=None, body=None, anonymous=LOGIN, htmx=False):
    return Row(route, "POST", url, anonymous, operator, operator if staff is None else staff, body=body, htmx=htmx,
               tags=("dashboard",))


BOT_BODY = {"name": "matrix-new", "strategy": "sma_crossover", "symbols": ["ETH-USD"], "params": {"fast": 3, "slow": 8}}
BOT_FORM = {"name": "matrix-form", "strategy": "sma_crossover", "symbols": "ETH-USD", "timeframe": "1d",
            "params.fast": "3", "params.slow": "8", "params.exposure": "1"}
SESSION = {"starting_cash": 100000, "duration_minutes": 60}

# --- the table -------------------------------------------------------------------------------------
# URLs name fixture rows in braces: {bot} (backtested, with runs), {spare_bot} (no runs, deletable),
# {run} (finished, with an artifact), {queued} (a queued run), {own_token}, {other_token}.

TABLE: list[Row] = [
    # the dashboard
    page("dashboard:", "/"),
    Row("dashboard:ui/login/", "GET", "/ui/login/", 200, 302, 302, note="a logged-in user goes home",
        tags=("dashboard", "public")),
    Row("dashboard:ui/logout/", "POST", "/ui/logout/", LOGGED_OUT, LOGGED_OUT, LOGGED_OUT,
        note="logging out is always allowed",
        tags=("dashboard", "public")),
    page("dashboard:ui/sessions/", "/ui/sessions/"),
    page("dashboard:ui/sessions/<str:run_id>/", "/ui/sessions/{run}/"),
    action("dashboard:ui/sessions/<str:run_id>/stop/", "/ui/sessions/{queued}/stop/", 200, htmx=True,
           anonymous=401),
    page("dashboard:ui/sessions/<str:run_id>/artifacts/<path:name>", "/ui/sessions/{run}/artifacts/session_status.json"),
    page("dashboard:ui/bots/", "/ui/bots/"),
    page("dashboard:ui/bots/new/", "/ui/bots/new/"),
    action("dashboard:ui/bots/new/", "/ui/bots/new/", 302, body=BOT_FORM),
    page("dashboard:ui/bots/<int:bot_id>/", "/ui/bots/{bot}/"),
    page("dashboard:ui/bots/<int:bot_id>/edit/", "/ui/bots/{bot}/edit/"),
    action("dashboard:ui/bots/<int:bot_id>/edit/", "/ui/bots/{spare_bot}/edit/", 302, body=BOT_FORM),
    action("dashboard:ui/bots/<int:bot_id>/backtest/", "/ui/bots/{bot}/backtest/", 200, htmx=True, anonymous=401,
           body={"data_source": "stored", "symbol": "ETH-USD", "starting_cash": "100000", "seed": "0",
                 "start": "2022-01-01", "end": "2022-12-31"}),
    action("dashboard:ui/bots/<int:bot_id>/paper/", "/ui/bots/{bot}/paper/", 200, htmx=True, anonymous=401,
           body={"starting_cash": "100000", "duration_minutes": "60", "pace": "1", "symbol": "ETH-USD",
                 "data_source": "synthetic"}),
    page("dashboard:ui/health/", "/ui/health/"),
    page("dashboard:ui/alerts/", "/ui/alerts/"),
    page("dashboard:ui/promotion/", "/ui/promotion/"),
    action("dashboard:ui/kill-switch/", "/ui/kill-switch/", 200, htmx=True, anonymous=401),
    action("dashboard:ui/kill-switch/rearm/", "/ui/kill-switch/rearm/", 403, staff=200, htmx=True, anonymous=401),
    action("dashboard:ui/kill-switch/rearm/", "/ui/kill-switch/rearm/", 403, staff=302),  # a plain form post
    page("dashboard:ui/fragments/topbar-status/", "/ui/fragments/topbar-status/"),
    page("dashboard:ui/fragments/sessions-rows/", "/ui/fragments/sessions-rows/"),
    page("dashboard:ui/fragments/strategy-params/", "/ui/fragments/strategy-params/?strategy=rsi_mean_reversion"),
    # the API's docs and schema are public
    Row("api-1:openapi.json", "GET", "/openapi.json", 200, 200, 200, tags=("public",)),
    Row("api-1:docs", "GET", "/docs", 200, 200, 200, tags=("public",)),
    Row("api-1:", "GET", "/", LOGIN, 200, 200, note="ninja's root view is shadowed by the dashboard's home",
        tags=("shadowed",)),
    # the API
    api("api-1:bots/halt-all", "POST", "/bots/halt-all", 200),
    api("api-1:bots", "GET", "/bots", 200),
    api("api-1:bots", "POST", "/bots", 201, body=BOT_BODY),
    api("api-1:bots/<int:bot_id>", "GET", "/bots/{bot}", 200),
    api("api-1:bots/<int:bot_id>", "PUT", "/bots/{spare_bot}", 200, body={**BOT_BODY, "name": "matrix-put"}),
    api("api-1:bots/<int:bot_id>", "PATCH", "/bots/{spare_bot}", 200, body={"timeframe": "1h"}),
    api("api-1:bots/<int:bot_id>", "DELETE", "/bots/{spare_bot}", 204),
    api("api-1:bots/<int:bot_id>/backtests", "POST", "/bots/{bot}/backtests", 201,
        body={"start": "2022-01-01", "end": "2022-12-31"}),
    api("api-1:bots/<int:bot_id>/backtests", "GET", "/bots/{bot}/backtests", 200),
    api("api-1:bots/<int:bot_id>/paper", "POST", "/bots/{bot}/paper", 201, body=SESSION),
    api("api-1:paper/stop-all", "POST", "/paper/stop-all", 200),
    api("api-1:paper/health", "GET", "/paper/health", 200),
    api("api-1:paper/alerts", "GET", "/paper/alerts", 200),
    api("api-1:paper/promotion", "GET", "/paper/promotion", 200),
    api("api-1:paper", "GET", "/paper", 200),
    api("api-1:paper/<run_id>", "GET", "/paper/{run}", 200),
    api("api-1:paper/<run_id>/stop", "POST", "/paper/{queued}/stop", 200),
    api("api-1:paper/<run_id>/fills", "GET", "/paper/{run}/fills", 200),
    api("api-1:paper/<run_id>/orders", "GET", "/paper/{run}/orders", 200),
    api("api-1:paper/<run_id>/equity", "GET", "/paper/{run}/equity", 200),
    api("api-1:paper/<run_id>/frames", "GET", "/paper/{run}/frames", 200),
    api("api-1:kill-switch", "POST", "/kill-switch", 200, note="any operator may fire it"),
    api("api-1:kill-switch", "GET", "/kill-switch", 200),
    api("api-1:kill-switch/rearm", "POST", "/kill-switch/rearm", 403, staff=200, note="re-arming needs staff"),
    api("api-1:tokens", "GET", "/tokens", 200),
    api("api-1:tokens/<int:token_id>", "DELETE", "/tokens/{own_token}", 200, note="one's own token"),
    api("api-1:tokens/<int:token_id>", "DELETE", "/tokens/{other_token}", 404, staff=200,
        note="someone else's: staff only; 404 to others"),
    # static files (whitenoise, before URL routing)
    Row("static", "GET", "/static/css/app.css", 200, 200, 200, tags=("public",)),
]

# The admin's main pages. Its per-model pages follow one rule (admin_model_rows), from the registry.
ADMIN_TABLE: list[Row] = [
    Row("admin:admin/", "GET", "/admin/", ADMIN_LOGIN, ADMIN_LOGIN, 200),
    Row("admin:admin/login/", "GET", "/admin/login/", 200, 200, 302,
        note="a non-staff user sees the login form, with 'not authorized'; staff goes to the index"),
    Row("admin:admin/logout/", "POST", "/admin/logout/", 302, 302, 200,
        note="without an admin session there is nothing to log out of: back to the admin"),
    Row("admin:admin/password_change/", "GET", "/admin/password_change/", ADMIN_LOGIN, ADMIN_LOGIN, 200),
    Row("admin:admin/password_change/done/", "GET", "/admin/password_change/done/", ADMIN_LOGIN, ADMIN_LOGIN, 200),
    Row("admin:admin/autocomplete/", "GET", "/admin/autocomplete/", ADMIN_LOGIN, ADMIN_LOGIN, 403,
        note="staff: 403 without a valid autocomplete query"),
    Row("admin:admin/jsi18n/", "GET", "/admin/jsi18n/", ADMIN_LOGIN, ADMIN_LOGIN, 200),
    Row("admin:admin/r/<path:content_type_id>/<path:object_id>/", "GET", "/admin/r/999999/1/", ADMIN_LOGIN,
        ADMIN_LOGIN, 404),
    Row("admin:admin/^(?P<app_label>auth|django_dramatiq|paper|bots|ledger)/$", "GET", "/admin/paper/",
        ADMIN_LOGIN, ADMIN_LOGIN, 200),
    Row("admin:admin/(?P<url>.*)$", "GET", "/admin/no/such/page/", ADMIN_LOGIN, ADMIN_LOGIN, 404),
    Row("admin:admin/auth/user/<id>/password/", "GET", "/admin/auth/user/{operator_id}/password/", ADMIN_LOGIN,
        ADMIN_LOGIN, 200),
]


def admin_model_rows() -> list[Row]:
    """Every registered model's admin pages: staff-only (anonymous and operators are sent to the
    admin login). Staff: the list 200; add 200, or 403 where the admin refuses adding; an object
    that does not exist redirects (302) to the admin index, except deleting where the admin
    refuses deletes (403)."""
    rows = []
    for model, model_admin in admin.site._registry.items():
        base = f"admin/{model._meta.app_label}/{model._meta.model_name}/"
        can_add = model_admin.has_add_permission(_superuser_request())
        can_delete = model_admin.has_delete_permission(_superuser_request())
        rows += [
            Row(f"admin:{base}", "GET", f"/{base}", ADMIN_LOGIN, ADMIN_LOGIN, 200),
            Row(f"admin:{base}add/", "GET", f"/{base}add/", ADMIN_LOGIN, ADMIN_LOGIN, 200 if can_add else 403),
        ]
        for suffix in ("<path:object_id>/history/", "<path:object_id>/delete/", "<path:object_id>/change/",
                       "<path:object_id>/"):
            url = "/" + base + suffix.replace("<path:object_id>", "999999")
            staff = 403 if suffix.endswith("delete/") and not can_delete else 302
            rows.append(Row(f"admin:{base}{suffix}", "GET", url, ADMIN_LOGIN, ADMIN_LOGIN, staff))
    return rows


def _superuser_request():
    from django.test import RequestFactory

    request = RequestFactory().get("/admin/")
    request.user = User(is_staff=True, is_superuser=True, is_active=True)
    return request


# WebSocket routes: the path tried, and per role True (connected) or the close code.
WEBSOCKET_TABLE = {
    r"^ws/paper/(?P<paper_run_id>[A-Za-z0-9_.-]{1,40})/?$": ("/ws/paper/{run}", {ANON: 4401, OPERATOR: True, STAFF: True}),
    "": ("/ws/nowhere", {ANON: 4404, OPERATOR: 4404, STAFF: 4404}),
}


# --- walking the routes ------------------------------------------------------------------------------

def walk(patterns, prefix="", namespace=None):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from walk(pattern.url_patterns, prefix + str(pattern.pattern), pattern.namespace or namespace)
        elif isinstance(pattern, URLPattern):
            yield f"{namespace}:{prefix}{pattern.pattern}"


def test_the_table_covers_every_url_pattern_and_nothing_else():
    walked = set(walk(get_resolver().url_patterns))
    tabled = {row.route for row in TABLE + ADMIN_TABLE + admin_model_rows()} - {"static"}
    assert walked - tabled == set(), "routes without a row: decide who may use them"
    assert tabled - walked == set(), "rows for routes that no longer exist"


def test_the_table_covers_every_api_operation():
    from tests.test_api_auth import EXPECTED_OPERATIONS, operations

    def openapi_path(route: str) -> str:
        return "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route.removeprefix("api-1:"))

    assert set(operations()) == EXPECTED_OPERATIONS
    assert {(row.method, openapi_path(row.route)) for row in TABLE if "api" in row.tags} == EXPECTED_OPERATIONS


def test_the_shadowed_api_root_resolves_to_the_dashboard():
    assert resolve("/").namespace == "dashboard"


def test_the_websocket_table_covers_every_route():
    from paper.routing import websocket_urlpatterns

    assert {str(p.pattern) for p in websocket_urlpatterns} == set(WEBSOCKET_TABLE)


# --- the world every request meets ---------------------------------------------------------------------

@pytest.fixture
def world(db, settings, eth_bars):
    from bots.services import backtest_run, bot_create
    from ledger.services import run_create, run_persist
    from paper.models import Bar
    from paper.tokens import api_token_create

    users = {
        OPERATOR: User.objects.create_user("op", email="op@example.com"),
        STAFF: User.objects.create_user("boss", email="boss@example.com", is_staff=True, is_superuser=True),
    }
    tokens = {role: api_token_create(user=user, name="matrix") for role, user in users.items()}
    stranger = User.objects.create_user("stranger")
    other_token, _ = api_token_create(user=stranger, name="not yours")
    recent = eth_bars.slice(len(eth_bars) - 1000, len(eth_bars))
    Bar.objects.bulk_create([
        Bar(symbol="ETH-USD", timeframe="1d", ts=datetime.fromtimestamp(int(recent.ts[i]), UTC),
            open=float(recent.open[i]), high=float(recent.high[i]), low=float(recent.low[i]),
            close=float(recent.close[i]), volume=float(recent.volume[i]))
        for i in range(len(recent))
    ])
    bot = bot_create(name="matrix", strategy="sma_crossover", params={"fast": 3, "slow": 8}, symbols=["ETH-USD"],
                     owner=users[OPERATOR])
    backtest_run(bot=bot, start=datetime(2022, 1, 1).date(), end=datetime(2023, 12, 31).date())
    spare = bot_create(name="matrix-spare", strategy="buy_and_hold", symbols=["ETH-USD"], owner=users[OPERATOR])
    config = bot.trading_config()
    finished = run_create(bot=bot, starting_cash=100_000, symbol="ETH-USD", timeframe="1d", data_source="stored",
                          seed=0, config_snapshot=config.canonical(), config_hash=config.config_hash)
    run_persist(run=finished, result=config.build_engine(starting_cash=100_000, seed=0).run(recent.slice(0, 200)),
                status="success", status_reason="completed")
    folder = settings.OUTPUTS_DIR / "paper_sessions" / finished.id
    folder.mkdir(parents=True)
    (folder / "session_status.json").write_text(json.dumps({"status": "success"}))
    queued = run_create(bot=bot, starting_cash=1000, symbol="ETH-USD", timeframe="1d", data_source="synthetic",
                        seed=1, config_snapshot=config.canonical(), config_hash=config.config_hash)
    ids = {"bot": bot.pk, "spare_bot": spare.pk, "run": finished.id, "queued": queued.id,
           "other_token": other_token.pk, "operator_id": users[OPERATOR].pk}
    return {"users": users, "tokens": tokens, "ids": ids}


def _url(row: Row, world, role: str) -> str:
    ids = dict(world["ids"])
    token_role = role if role != ANON else OPERATOR
    ids["own_token"] = world["tokens"][token_role][0].pk
    return row.url.format(**ids)


def _client(world, role: str, *, csrf: bool) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    if role != ANON:
        client.force_login(world["users"][role])
    return client


def _send(client: Client, row: Row, url: str, *, csrf_token: str | None = None, **extra):
    headers = dict(HTMX if row.htmx else {})
    if csrf_token:
        headers["HTTP_X_CSRFTOKEN"] = csrf_token
    headers.update(extra)
    if "api" in row.tags or row.route.startswith("api-1"):
        data = "" if row.body is None else json.dumps(row.body)
        return client.generic(row.method, url, data=data, content_type="application/json", **headers)
    if row.method == "GET":
        return client.get(url, **headers)
    return client.post(url, row.body or {}, **headers)


@contextmanager
def rolled_back():
    """One request in a savepoint that is rolled back: every row meets the same database."""
    sid = transaction.savepoint()
    try:
        yield
    finally:
        transaction.savepoint_rollback(sid)


def _mismatch(response, expected, row: Row, role: str, how: str) -> str | None:
    """Why `response` is not what the table expects, or None."""
    where = f"{row.method} {row.url} as {role} ({how})"
    status, location = response.status_code, response.headers.get("Location", "")
    if expected == LOGIN:
        ok = status == 302 and location.startswith("/ui/login/?next=")
    elif expected == LOGGED_OUT:
        ok = status == 302 and location == "/ui/login/"
    elif expected == ADMIN_LOGIN:
        ok = status == 302 and location.startswith("/admin/login/?next=")
    else:
        ok = status == expected and not (status == 302 and "/login/" in location)  # a redirect, not to a login
    if ok and status in (401, 403) and "api" in row.tags:
        body = response.json()
        ok = body.get("code") == ("not_authenticated" if status == 401 else "forbidden") and bool(body.get("detail"))
    return None if ok else f"{where}: expected {expected}, got {status} {location}"


def _assert_all(mismatches: list) -> None:
    mismatches = [m for m in mismatches if m]
    assert not mismatches, "\n".join(mismatches)


# --- the matrix ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ROLES)
def test_every_route_answers_each_role_as_the_table_says(world, role):
    """Browsers: a session cookie, with the CSRF token on unsafe requests (as the dashboard sends it)."""
    token = CSRF_SECRET  # the csrftoken cookie's value; the page would put the same in X-CSRFToken
    mismatches = []
    for row in TABLE + ADMIN_TABLE + admin_model_rows():
        client = _client(world, role, csrf=True)  # a fresh session each time (logout ends one)
        client.cookies["csrftoken"] = token
        url = _url(row, world, role)
        with rolled_back():
            response = _send(client, row, url, csrf_token=token)
        mismatches.append(_mismatch(response, row.expected(role), row, role, "session"))
    _assert_all(mismatches)


@pytest.mark.parametrize("role", (OPERATOR, STAFF))
def test_api_tokens_get_what_sessions_get_without_csrf(world, role):
    _, raw = world["tokens"][role]
    mismatches = []
    for row in [r for r in TABLE if "api" in r.tags]:
        client = Client(enforce_csrf_checks=True)
        url = _url(row, world, role)
        with rolled_back():
            response = _send(client, row, url, HTTP_AUTHORIZATION=f"Bearer {raw}")
        mismatches.append(_mismatch(response, row.expected(role), row, role, "token"))
    _assert_all(mismatches)


UNSAFE_SESSION_ROWS = [r for r in TABLE if r.method != "GET" and "public" not in r.tags]


@pytest.mark.parametrize("role", (OPERATOR, STAFF))
def test_session_posts_without_the_csrf_token_are_403_and_change_nothing(world, role):
    from bots.models import Bot
    from ledger.models import PaperTradingRun
    from risk.models import KillSwitch

    before = (Bot.objects.count(), PaperTradingRun.objects.filter(status="queued").count())
    for row in UNSAFE_SESSION_ROWS + [r for r in TABLE if r.route == "dashboard:ui/logout/"]:
        client = _client(world, role, csrf=True)
        response = _send(client, row, _url(row, world, role))
        assert response.status_code == 403, (row.method, row.url, role, response.status_code)
        if "api" in row.tags:
            assert response.json()["code"] == "forbidden" and "CSRF" in response.json()["detail"]
    assert (Bot.objects.count(), PaperTradingRun.objects.filter(status="queued").count()) == before
    assert not KillSwitch.objects.filter(latched=True).exists()


def test_anonymous_htmx_requests_are_sent_to_the_login_page(world):
    client = Client()
    for row in [r for r in TABLE if "dashboard" in r.tags and "public" not in r.tags]:
        response = client.generic(row.method, _url(row, world, ANON), **HTMX)
        assert response.status_code == 401, (row.method, row.url, response.status_code)
        assert response.headers["HX-Redirect"].startswith("/ui/login/?next="), row.url


@pytest.mark.parametrize("how", ["revoked", "inactive user"])
def test_a_revoked_token_or_an_inactive_users_token_is_401_everywhere_in_the_api(world, how):
    from paper.tokens import api_token_create, api_token_revoke

    user = User.objects.create_user(f"gone-{how.replace(' ', '-')}", is_staff=True)
    token, raw = api_token_create(user=user)
    if how == "revoked":
        api_token_revoke(token=token)
    else:
        User.objects.filter(pk=user.pk).update(is_active=False)
    for row in [r for r in TABLE if "api" in r.tags]:
        response = _send(Client(), row, _url(row, world, STAFF), HTTP_AUTHORIZATION=f"Bearer {raw}")
        assert response.status_code == 401, (row.method, row.url, how)
        assert response.json()["code"] == "not_authenticated"


# --- the kill switch's re-arm policy, in words ------------------------------------------------------------

def test_an_operator_is_told_who_may_rearm_and_sees_no_rearm_button(world):
    from risk.services import kill_switch_fire

    kill_switch_fire(reason="drill", user=world["users"][OPERATOR])
    operator = _client(world, OPERATOR, csrf=False)
    body = operator.get("/").content.decode()
    assert "Kill switch latched" in body and "btn-rearm" not in body
    assert "Only a staff user can re-arm it" in body
    refused = operator.post("/ui/kill-switch/rearm/", **HTMX)
    assert refused.status_code == 403 and "staff" in refused.content.decode()
    page = operator.post("/ui/kill-switch/rearm/")
    assert page.status_code == 403 and "only staff users may re-arm" in page.content.decode()
    api_refusal = operator.post("/kill-switch/rearm", content_type="application/json")
    assert api_refusal.status_code == 403 and "only staff users may re-arm" in api_refusal.json()["detail"]
    staff = _client(world, STAFF, csrf=False)
    assert "btn-rearm" in staff.get("/").content.decode()


def test_staff_without_superuser_may_rearm(world):
    from risk.models import KillSwitch
    from risk.services import kill_switch_fire

    kill_switch_fire(reason="drill")
    plain_staff = User.objects.create_user("plain-staff", is_staff=True)
    client = Client()
    client.force_login(plain_staff)
    assert client.post("/kill-switch/rearm", content_type="application/json").status_code == 200
    assert not KillSwitch.objects.get(pk=1).latched


# --- WebSockets ----------------------------------------------------------------------------------------

@database_sync_to_async
def _socket_world():
    from bots.services import bot_create
    from ledger.services import frames_record, run_create
    from paper.tokens import api_token_create, api_token_revoke

    people = {
        OPERATOR: User.objects.create_user("ws-op"),
        STAFF: User.objects.create_user("ws-boss", is_staff=True, is_superuser=True),
    }
    cookies = {}
    for role, user in people.items():
        client = Client()
        client.force_login(user)
        cookies[role] = f"sessionid={client.cookies['sessionid'].value}".encode()
    bot = bot_create(name="ws", strategy="buy_and_hold", symbols=["ETH-USD"])
    run = run_create(bot=bot, starting_cash=1000, symbol="ETH-USD", timeframe="1d", data_source="synthetic",
                     seed=1, config_snapshot={}, config_hash="x")
    frames_record(run=run, frames=[{"task_id": run.id, "stage": "bar.received", "message": "bar 1",
                                    "timestamp": timezone.now().isoformat(), "seq": 1}])
    token, raw = api_token_create(user=people[OPERATOR])
    revoked, revoked_raw = api_token_create(user=people[OPERATOR])
    api_token_revoke(token=revoked)
    idle = User.objects.create_user("ws-idle", is_active=False)
    _, idle_raw = api_token_create(user=idle)
    return run.id, cookies, {"valid": raw, "revoked": revoked_raw, "inactive user": idle_raw}


async def _connects(path: str, headers: list) -> bool | int:
    """True if the socket was accepted and serves frames, else its close code (a refused socket is
    accepted, sent an error frame, then closed)."""
    from config.asgi import application

    ws = WebsocketCommunicator(application, path, headers=headers)
    connected, code = await ws.connect()
    if not connected:
        return code
    first = await ws.receive_output(timeout=2)
    if first["type"] == "websocket.send" and json.loads(first["text"]).get("stage") == "error":
        close = await ws.receive_output(timeout=2)
        assert close["type"] == "websocket.close", close
        return close["code"]
    await ws.disconnect()
    return True


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_every_websocket_route_answers_each_role_as_the_table_says():
    from paper.routing import websocket_urlpatterns

    run_id, cookies, tokens = await _socket_world()
    origin = (b"origin", b"http://localhost:8000")
    for route in websocket_urlpatterns:
        template, expected = WEBSOCKET_TABLE[str(route.pattern)]
        path = template.format(run=run_id)
        assert await _connects(path, [origin]) == expected[ANON], (path, ANON)
        for role in (OPERATOR, STAFF):
            assert await _connects(path, [origin, (b"cookie", cookies[role])]) == expected[role], (path, role)
    path = f"/ws/paper/{run_id}"
    # tokens: a valid one connects; a revoked one, or an inactive user's, is refused (4401)
    assert await _connects(f"{path}?token={tokens['valid']}", []) is True
    for how in ("revoked", "inactive user"):
        assert await _connects(f"{path}?token={tokens[how]}", []) == 4401, how
        assert await _connects(path, [(b"authorization", f"Bearer {tokens[how]}".encode())]) == 4401, how
