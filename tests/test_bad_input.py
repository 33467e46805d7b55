"""Bad input everywhere (issue 6, item 4): every hostile input gets a clear refusal and leaves
nothing half-written.

A refusal is a 4xx with a JSON `{"code", "detail"}` body naming the field or the reason (the REST
API), a 4xx page with the message next to its field (the dashboard), exit code 2 with a message
on stderr and no traceback (`manage.py`), or an AppError / ValueError naming it (the services).
"Nothing half-written": the row counts of every table a write could touch and the files under
OUTPUTS_DIR (and any artifact root named) are the same after the refusal as before it.

Surfaces covered per input, where the input applies to them:

- bot config and risk block: the service, POST /bots, PATCH /bots/{id}, the dashboard's bot form;
- absurd numbers: sessions and backtests through the services, the API, the dashboard, `manage.py
  backtest` and `manage.py run`;
- a huge body: POST/PUT /bots and the dashboard form;
- CSV files: bars_import and `manage.py import_bars` (tests/test_csv_import.py has the rest);
- `--json-request` (tests/test_run_command.py has the rest), including `@FILE`;
- corrupt artifact roots: every runbook operation of `manage.py run`, in process and as a real
  command line (no traceback on stderr);
- WebSocket input (tests/test_consumers.py has the size limit and the unknown run).
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client

from bots.models import Bot
from bots.services import backtest_run, bot_create, bot_get, bot_update
from config.errors import AppError
from paper import artifact_contract as c
from paper.engine.csvbars import BarFileError
from paper.services import bars_import
from paper.tokens import api_token_create
from tests import runbook_fixtures as fx
from tests.commands import manage_py_many

PROJECT = Path(__file__).resolve().parent.parent
TABLES = ("bots", "backtest_runs", "paper_trading_runs", "paper_orders", "paper_fills", "paper_equity_points",
          "market_bars")
NAN, INF = float("nan"), float("inf")
HUGE_INT = 10**30
BASE_BOT = {"name": "hostile", "strategy": "sma_crossover", "params": {"fast": 3, "slow": 8},
            "symbols": ["ETH-USD"], "timeframe": "1d"}

pytestmark = pytest.mark.django_db


# --- helpers ---------------------------------------------------------------------------------------

def nested(depth: int, leaf=1) -> dict:
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def files_under(*roots: Path) -> list[str]:
    return sorted(str(p) for root in roots if Path(root).exists() for p in Path(root).rglob("*"))


def state(*roots: Path) -> dict:
    """Row counts of every table a refused write could touch, the bots themselves, and the files."""
    with connection.cursor() as cursor:
        counts = {}
        for table in TABLES:
            cursor.execute(f"SELECT COUNT(*) FROM {table}")  # noqa: S608 - fixed table names
            counts[table] = cursor.fetchone()[0]
    return {"counts": counts, "bots": list(Bot.objects.order_by("pk").values()),
            "files": files_under(settings.OUTPUTS_DIR, *roots)}


def assert_refused(response, *fragments: str, statuses=(400, 409, 413, 422)) -> dict:
    """A 4xx JSON body {code, detail} whose text names every fragment (the field or the reason)."""
    assert response.status_code in statuses, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith("application/json"), response.content[:300]
    body = response.json()
    assert isinstance(body.get("code"), str) and body["code"], body
    assert isinstance(body.get("detail"), str) and body["detail"], body
    text = json.dumps(body)
    for fragment in fragments:
        assert fragment in text, (fragment, body)
    return body


def assert_app_error(exc: AppError, *fragments: str) -> None:
    assert 400 <= exc.status < 500, exc.status
    text = exc.message + json.dumps(exc.details, default=str)
    for fragment in fragments:
        assert fragment in text, (fragment, text)


def command(*args: str) -> tuple[int, str, str]:
    """call_command as (exit code, stdout, error message); anything but CommandError propagates."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command(*args, stdout=out, stderr=err)
    except CommandError as exc:
        return exc.returncode, out.getvalue(), str(exc)
    return 0, out.getvalue(), err.getvalue()


def manage_py(argvs: list[list[str]], tmp: Path) -> list[dict]:
    """Real command lines, against a database that does not exist: a refusal must not need one."""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp / 'no-such-dir' / 'db.sqlite3'}",
           "OUTPUTS_DIR": str(tmp / "outputs"), "PYTHONIOENCODING": "utf-8"}
    results = manage_py_many(argvs, env=env)
    assert not (tmp / "no-such-dir").exists() and not (tmp / "outputs").exists()
    return results


@pytest.fixture
def operator(db):
    return User.objects.create_user("operator")  # force_login: no password to hash (slow on purpose)


@pytest.fixture
def api(client, operator):
    _, token = api_token_create(user=operator)
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


@pytest.fixture
def browser(operator):
    """A session client that checks CSRF like a browser; every POST sends the page's token."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    client.get("/")
    client.defaults["HTTP_X_CSRFTOKEN"] = client.cookies["csrftoken"].value
    return client


@pytest.fixture
def bot(operator):
    return bot_create(name="target", strategy="sma_crossover", params={"fast": 3, "slow": 8},
                      symbols=["ETH-USD", "BTC-USD"], timeframe="1d", risk={"max_drawdown_pct": 50}, owner=operator)


# --- 1. a malformed bot config or risk block --------------------------------------------------------
# (id, changes to BASE_BOT, what the refusal must name)

BAD_CONFIGS = [
    ("unknown strategy", {"strategy": "no_such_strategy"}, "strategy"),
    ("strategy: thousands of dots", {"strategy": "a." * 3000 + "B"}, "strategy"),
    ("strategy: not a Strategy", {"strategy": "os.path:join"}, "strategy"),
    ("strategy: a number", {"strategy": 7}, "strategy"),
    ("unknown param", {"params": {"fast": 3, "slow": 8, "fsat": 2}}, "fsat"),
    ("param: string for an int", {"params": {"fast": "3", "slow": 8}}, "fast"),
    ("param: float for an int", {"params": {"fast": 3.5, "slow": 8}}, "fast"),
    ("param: bool for an int", {"params": {"fast": True, "slow": 8}}, "fast"),
    ("param: NaN", {"params": {"fast": 3, "slow": 8, "exposure": NAN}}, "params"),
    ("param: inf", {"params": {"fast": 3, "slow": 8, "exposure": INF}}, "params"),
    ("param: 1e308", {"params": {"fast": 3, "slow": 8, "exposure": 1e308}}, "exposure"),
    ("param: 10**30", {"params": {"fast": HUGE_INT, "slow": 8}}, "fast"),
    ("param: -1", {"params": {"fast": -1, "slow": 8}}, "fast"),
    ("param: 0", {"params": {"fast": 3, "slow": 8, "exposure": 0}}, "exposure"),
    ("params: a list", {"params": [3, 8]}, "params"),
    ("params: nested 200 deep", {"params": nested(200)}, "params"),
    ("params: NUL in a key", {"params": {"fa\x00st": 3}}, "params"),
    ("risk: unknown key", {"risk": {"max_levrage": 2}}, "max_levrage"),
    ("risk: negative", {"risk": {"max_daily_loss": -1}}, "max_daily_loss"),
    ("risk: zero", {"risk": {"max_leverage": 0}}, "max_leverage"),
    ("risk: string for a number", {"risk": {"max_leverage": "2"}}, "max_leverage"),
    ("risk: bool for a number", {"risk": {"max_leverage": True}}, "max_leverage"),
    ("risk: float for an int", {"risk": {"max_orders_per_minute": 2.5}}, "max_orders_per_minute"),
    ("risk: NaN", {"risk": {"max_position_units": NAN}}, "risk"),
    ("risk: inf", {"risk": {"max_order_notional": INF}}, "risk"),
    ("risk: -inf", {"risk": {"max_order_notional": -INF}}, "risk"),
    ("risk: 1e308", {"risk": {"max_position_units": 1e308}}, "max_position_units"),
    ("risk: 10**30 orders a minute", {"risk": {"max_orders_per_minute": HUGE_INT}}, "max_orders_per_minute"),
    ("risk: drawdown over 100%", {"risk": {"max_drawdown_pct": 150}}, "max_drawdown_pct"),
    ("risk: a list", {"risk": [{"max_leverage": 1}]}, "risk"),
    ("risk: nested 200 deep", {"risk": nested(200)}, "risk"),
    ("execution: string for a number", {"execution": {"slippage_bps": "2"}}, "slippage_bps"),
    ("execution: string for a flag", {"execution": {"allow_short": "yes"}}, "allow_short"),
    ("execution: unknown key", {"execution": {"leverage": 5}}, "leverage"),
    ("execution: negative fee", {"execution": {"taker_fee_bps": -1}}, "taker_fee_bps"),
    ("symbols: empty", {"symbols": []}, "symbols"),
    ("symbols: a string", {"symbols": "ETH-USD"}, "symbols"),
    ("symbols: lower case", {"symbols": ["eth-usd"]}, "symbols"),
    ("symbols: 101 of them", {"symbols": [f"S{i}" for i in range(101)]}, "symbols"),
    ("symbols: duplicates", {"symbols": ["ETH-USD", "ETH-USD"]}, "symbols"),
    ("symbols: overlong", {"symbols": ["X" * 33]}, "symbols"),
    ("symbols: NUL", {"symbols": ["ETH\x00"]}, "symbols"),
    ("symbols: a number", {"symbols": [42]}, "symbols"),
    ("timeframe: 1y", {"timeframe": "1y"}, "timeframe"),
    ("timeframe: 10,000 nines", {"timeframe": "9" * 10_000}, "timeframe"),
    ("timeframe: a number", {"timeframe": 60}, "timeframe"),
    ("name: overlong", {"name": "n" * 101}, "name"),
    ("name: empty", {"name": ""}, "name"),
    ("name: blank", {"name": "   "}, "name"),
    ("name: NUL", {"name": "a\x00b"}, "name"),
    ("name: escape sequence", {"name": "\x1b[31mred"}, "name"),
    ("name: a number", {"name": 42}, "name"),
]
CONFIG_IDS = [case[0] for case in BAD_CONFIGS]


@pytest.mark.parametrize(("label", "changes", "field"), BAD_CONFIGS, ids=CONFIG_IDS)
def test_a_bad_config_is_refused_by_the_service(label, changes, field):
    before = state()
    with pytest.raises(AppError) as info:
        bot_create(**{**BASE_BOT, **changes})
    assert_app_error(info.value, field)
    assert state() == before


@pytest.mark.parametrize(("label", "changes", "field"), BAD_CONFIGS, ids=CONFIG_IDS)
def test_a_bad_config_is_a_4xx_from_post_bots(api, label, changes, field):
    before = state()
    response = api.post("/bots", data=json.dumps({**BASE_BOT, **changes}), content_type="application/json")
    assert_refused(response, field)
    assert state() == before


@pytest.mark.parametrize(("label", "changes", "field"), BAD_CONFIGS, ids=CONFIG_IDS)
def test_a_bad_config_is_a_4xx_from_patch_and_the_bot_is_unchanged(api, bot, label, changes, field):
    before = state()
    response = api.patch(f"/bots/{bot.pk}", data=json.dumps(changes), content_type="application/json")
    assert_refused(response, field)
    assert state() == before


@pytest.mark.parametrize(("label", "changes", "field"), BAD_CONFIGS[:12], ids=CONFIG_IDS[:12])
def test_a_bad_config_is_refused_by_bot_update_and_the_bot_is_unchanged(bot, label, changes, field):
    before = state()
    with pytest.raises(AppError) as info:
        bot_update(bot=bot, **changes)
    assert_app_error(info.value, field)
    assert state() == before


@pytest.mark.parametrize("body", [
    pytest.param("[]", id="a list"), pytest.param('"bot"', id="a string"), pytest.param("null", id="null"),
    pytest.param("[" * 100_000, id="100,000 brackets"), pytest.param('{"name": ' * 5_000, id="5,000 open objects"),
    pytest.param(json.dumps({**BASE_BOT, "params": nested(900)}), id="params nested 900 deep"),
])
def test_a_body_of_the_wrong_shape_is_a_4xx(api, body):
    before = state()
    assert_refused(api.post("/bots", data=body, content_type="application/json"))
    assert state() == before


# The dashboard's bot form: (id, fields posted, the form field the message must sit next to)
FORM_BASE = {"name": "eth-trend", "strategy": "sma_crossover", "symbols": "ETH-USD", "timeframe": "1d",
             "params.fast": "20", "params.slow": "50"}
BAD_FORMS = [
    ("name: blank", {"name": "   "}, "name"),
    ("name: overlong", {"name": "n" * 101}, "name"),
    ("name: NUL", {"name": "a\x00b"}, "name"),
    ("name: escape sequence", {"name": "\x1b[31mred"}, "name"),
    ("symbols: only commas", {"symbols": " , ,"}, "symbols"),
    ("symbols: lower case", {"symbols": "eth usd"}, "symbols"),
    ("symbols: 101 of them", {"symbols": ",".join(f"S{i}" for i in range(101))}, "symbols"),
    ("strategy: thousands of dots", {"strategy": "a." * 3000 + "B"}, "strategy"),
    ("strategy: a module path", {"strategy": "os:system"}, "strategy"),
    ("timeframe: 1y", {"timeframe": "1y"}, "timeframe"),
    ("param: text", {"params.fast": "abc"}, "params.fast"),
    ("param: 1e308", {"params.fast": "1e308"}, "params.fast"),
    ("param: 10**30", {"params.fast": str(HUGE_INT)}, "params.fast"),
    ("param: -1", {"params.fast": "-1"}, "params.fast"),
    ("param: 2.5 for an int", {"params.fast": "2.5"}, "params.fast"),
    ("param: nan", {"params.exposure": "nan"}, "params.exposure"),
    ("param: inf", {"params.exposure": "inf"}, "params.exposure"),
    ("param: 0", {"params.exposure": "0"}, "params.exposure"),
    ("risk: -1", {"risk.max_leverage": "-1"}, "risk.max_leverage"),
    ("risk: 0", {"risk.max_daily_loss": "0"}, "risk.max_daily_loss"),
    ("risk: nan", {"risk.max_position_units": "nan"}, "risk.max_position_units"),
    ("risk: -inf", {"risk.max_order_notional": "-inf"}, "risk.max_order_notional"),
    ("risk: 1e308", {"risk.max_position_units": "1e308"}, "risk.max_position_units"),
    ("risk: 10**30 orders a minute", {"risk.max_orders_per_minute": str(HUGE_INT)}, "risk.max_orders_per_minute"),
    ("risk: 1.5 orders a minute", {"risk.max_orders_per_minute": "1.5"}, "risk.max_orders_per_minute"),
    ("execution: text", {"execution.taker_fee_bps": "abc"}, "execution.taker_fee_bps"),
    ("execution: negative", {"execution.slippage_bps": "-1"}, "execution.slippage_bps"),
]


@pytest.mark.parametrize(("label", "post", "field"), BAD_FORMS, ids=[f[0] for f in BAD_FORMS])
def test_the_bot_form_refuses_bad_input_next_to_its_field(browser, label, post, field):
    before = state()
    response = browser.post("/ui/bots/new/", {**FORM_BASE, **post})
    assert response.status_code == 422, response.status_code
    assert response.context["form"].errors.get(field), (field, dict(response.context["form"].errors))
    assert state() == before


@pytest.mark.parametrize(("label", "post", "field"), BAD_FORMS[::3], ids=[f[0] for f in BAD_FORMS[::3]])
def test_the_edit_form_refuses_bad_input_and_the_bot_is_unchanged(browser, bot, label, post, field):
    before = state()
    response = browser.post(f"/ui/bots/{bot.pk}/edit/", {**FORM_BASE, "name": bot.name, **post})
    assert response.status_code == 422
    assert response.context["form"].errors.get(field)
    assert state() == before


def test_the_params_fragment_never_imports_what_it_is_asked_for(browser):
    # `this` prints the Zen of Python when imported: a dotted path from a query string must not be.
    sys.modules.pop("this", None)
    for strategy in ("this:Strategy", "a." * 3000 + "B", "\x00", "x" * 100_000):
        response = browser.get("/ui/fragments/strategy-params/", {"strategy": strategy}, HTTP_HX_REQUEST="true")
        assert response.status_code == 200 and b"cannot be loaded" in response.content, strategy
    assert "this" not in sys.modules


@pytest.mark.parametrize("ref", [
    pytest.param("9" * 5000, id="5,000 digits"), pytest.param("9" * 20, id="past 64 bits"),
    pytest.param("\u0661\u0662\u0663", id="Arabic-Indic digits"), pytest.param("a\x00b", id="NUL"),
    pytest.param("n" * 10_000, id="10,000 characters"), pytest.param("-1", id="-1"),
])
def test_a_hostile_bot_reference_is_not_found_not_a_crash(bot, ref):
    with pytest.raises(AppError) as info:
        bot_get(bot_ref=ref)
    assert info.value.status == 404 and len(info.value.message) < 200
    code, _, message = command("backtest", ref, "--data-source", "synthetic")
    assert code == 2 and "no bot" in message


# --- 2. absurd numbers -----------------------------------------------------------------------------

ABSURD = [pytest.param(v, id=i) for v, i in [
    (NAN, "NaN"), (INF, "inf"), (-INF, "-inf"), (1e308, "1e308"), (-1, "-1"), (0, "0"), (HUGE_INT, "10**30"),
]]
SESSION_FIELDS = ["starting_cash", "duration_minutes", "pace"]


# Every session number the API refuses with 422: the three amounts at each absurd value, and the
# seed and warm-up at the values only they refuse (a fraction, a negative, beyond 64 bits).
API_SESSION_CASES = [
    *[pytest.param(field, p.values[0], id=f"{field}-{p.id}") for field in SESSION_FIELDS for p in ABSURD],
    *[pytest.param(field, value, id=f"{field}-{value!r}") for field, value in [
        ("seed", -1), ("seed", HUGE_INT), ("seed", 1.5), ("seed", NAN), ("seed", INF),
        ("warmup_bars", -1), ("warmup_bars", HUGE_INT), ("warmup_bars", 2.5)]],
]


@pytest.mark.parametrize(("field", "value"), API_SESSION_CASES)
def test_an_absurd_session_number_is_a_422_from_the_api(api, bot, field, value):
    body = {"starting_cash": 100_000, "duration_minutes": 60, field: value}
    before = state()
    response = api.post(f"/bots/{bot.pk}/paper", data=json.dumps(body), content_type="application/json")
    assert_refused(response, field, statuses=(422,))
    assert state() == before


@pytest.mark.parametrize("value", ABSURD)
@pytest.mark.parametrize("field", SESSION_FIELDS)
def test_an_absurd_session_number_is_refused_by_the_service(bot, field, value):
    from paper.sessions import SessionRequest, session_start

    before = state()
    with pytest.raises(AppError) as info:
        session_start(bot=bot, request=SessionRequest(**{"starting_cash": 100_000, "duration_minutes": 60,
                                                          field: value}))
    assert_app_error(info.value, field)
    assert state() == before


@pytest.mark.parametrize("value", ABSURD)
def test_an_absurd_starting_cash_is_refused_for_a_backtest_everywhere(api, browser, bot, value):
    before = state()
    response = api.post(f"/bots/{bot.pk}/backtests", content_type="application/json",
                        data=json.dumps({"data_source": "synthetic", "starting_cash": value}))
    assert_refused(response, "starting_cash", statuses=(422,))
    with pytest.raises(AppError) as info:
        backtest_run(bot=bot, data_source="synthetic", starting_cash=value)
    assert_app_error(info.value, "starting_cash")
    page = browser.post(f"/ui/bots/{bot.pk}/backtest/", {"data_source": "synthetic", "symbol": "ETH-USD",
                                                         "starting_cash": repr(value), "seed": "0"})
    assert page.status_code == 422 and page.context["backtest_form"].errors.get("starting_cash")
    code, _, message = command("backtest", str(bot.pk), "--data-source", "synthetic", f"--starting-cash={value!r}")
    assert code == 2 and "starting_cash" in message
    assert state() == before


@pytest.mark.parametrize("value", [pytest.param(v, id=repr(v)) for v in (-1, HUGE_INT, 2**63)])
def test_an_absurd_seed_is_refused_for_a_backtest_everywhere(api, browser, bot, value):
    before = state()
    response = api.post(f"/bots/{bot.pk}/backtests", content_type="application/json",
                        data=json.dumps({"data_source": "synthetic", "seed": value}))
    assert_refused(response, "seed", statuses=(422,))
    with pytest.raises(AppError) as info:
        backtest_run(bot=bot, data_source="synthetic", seed=value)
    assert_app_error(info.value, "seed")
    page = browser.post(f"/ui/bots/{bot.pk}/backtest/", {"data_source": "synthetic", "symbol": "ETH-USD",
                                                         "starting_cash": "1000", "seed": str(value)})
    assert page.status_code == 422 and page.context["backtest_form"].errors.get("seed")
    code, _, message = command("backtest", str(bot.pk), "--data-source", "synthetic", f"--seed={value}")
    assert code == 2 and "seed" in message
    assert state() == before


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"start": "9999-12-31"}, "start"),
    ({"symbol": "DOGE-USD"}, "symbol"),
    ({"symbol": "ETH\x00"}, "symbol"),
    ({"start": "2023-01-01", "end": "2022-01-01"}, "end"),
    ({"synthetic_count": HUGE_INT}, "bars"),
    ({"synthetic_count": 0}, "bars"),
    ({"synthetic_count": "10"}, "bars"),
])
def test_an_absurd_backtest_range_is_refused_by_the_service(bot, kwargs, fragment):
    from datetime import date

    kwargs = {k: date.fromisoformat(v) if k in ("start", "end") else v for k, v in kwargs.items()}
    before = state()
    with pytest.raises(AppError) as info:
        backtest_run(bot=bot, data_source="synthetic", **kwargs)
    assert_app_error(info.value, fragment)
    assert state() == before


@pytest.mark.parametrize("post", [
    pytest.param({"starting_cash": "1e308"}, id="cash 1e308"),
    pytest.param({"starting_cash": "nan"}, id="cash nan"),
    pytest.param({"starting_cash": "-inf"}, id="cash -inf"),
    pytest.param({"duration_minutes": "1e308"}, id="duration 1e308"),
    pytest.param({"duration_minutes": str(HUGE_INT)}, id="duration 10**30"),
    pytest.param({"duration_minutes": "0"}, id="duration 0"),
    pytest.param({"pace": "-1"}, id="pace -1"),
    pytest.param({"pace": "inf"}, id="pace inf"),
    pytest.param({"symbol": "DOGE-USD"}, id="a symbol the bot does not trade"),
])
def test_the_session_form_refuses_absurd_numbers(browser, bot, post):
    form = {"starting_cash": "100000", "duration_minutes": "60", "pace": "1", "symbol": "ETH-USD",
            "data_source": "synthetic", **post}
    before = state()
    response = browser.post(f"/ui/bots/{bot.pk}/paper/", form, HTTP_HX_REQUEST="true")
    assert response.status_code == 422
    field = next(iter(post))
    assert response.context["session_form"].errors.get(field), dict(response.context["session_form"].errors)
    assert state() == before


@pytest.mark.parametrize(("flags", "fragment"), [
    (["--starting-cash", "nan"], "starting_cash"),
    (["--starting-cash", "inf"], "starting_cash"),
    (["--starting-cash", "1e308"], "starting_cash"),
    (["--starting-cash", "-1"], "starting_cash"),
    (["--starting-cash", "0"], "starting_cash"),
    (["--seed", str(HUGE_INT)], "seed"),
    (["--seed", "-1"], "seed"),
    (["--bars", "0"], "bars"),
    (["--bars", str(HUGE_INT)], "bars"),
    (["--params", '{"fast": NaN, "slow": 8}'], "fast"),
    (["--params", '{"fast": 3, "slow": 8, "exposure": Infinity}'], "exposure"),
    (["--params", '{"fast": 1e308, "slow": 8}'], "fast"),
    (["--params", "[3, 8]"], "params"),
    (["--params", "[" * 100_000], "params"),
    (["--timeframe", "9" * 10_000], "timeframe"),
    (["--strategy", "a." * 3000 + "B"], "strategy"),
    (["--ticker", "ETH\x00"], "ticker"),
])
def test_absurd_run_flags_exit_2_and_write_nothing(tmp_path, flags, fragment):
    argv = ["--paper", "--data-source", "synthetic", "--bars", "50", "--strategy", "sma_crossover",
            "--ticker", "SYN-USD", "--timeframe", "1d"]
    for i in range(0, len(flags), 2):  # a flag given twice: the later one wins
        argv += flags[i:i + 2]
    before = state()
    code, out, message = command("run", *argv)
    assert code == 2, (out, message)
    assert fragment in message
    assert state() == before and not settings.OUTPUTS_DIR.exists()


@pytest.mark.parametrize(("flags", "fragment"), [
    (["--port", "70000"], "--port"), (["--port=-1"], "--port"), (["--threads", "0"], "--threads"),
    (["--threads", str(HUGE_INT)], "--threads"), (["--host", "local host"], "--host"), (["--host", ""], "--host"),
    (["--host", "http://localhost"], "--host"), (["--host", "a\x00"], "--host"),
])
def test_bad_serve_flags_exit_2_before_anything_starts(flags, fragment):
    before = state()
    code, out, message = command("serve", "--no-demo", *flags)
    assert code == 2 and fragment in message and out == "", (code, out, message)
    assert state() == before


@pytest.mark.parametrize(("redis_url", "flags", "fragment"), [
    ("redis://127.0.0.1:6379/9", ["--processes", "0"], "--processes must be from 1 to 64"),
    ("redis://127.0.0.1:6379/9", ["--processes", "65"], "--processes must be from 1 to 64"),
    ("", ["--processes", "2"], "needs REDIS_URL"),
    ("redis://127.0.0.1:6379/9", ["--processes", "2", "--host", "::1"], "IPv4"),
    ("redis://127.0.0.1:6379/9", ["--processes", "2", "--worker", "yes"], "rundramatiq"),
    # The children's own (hidden) flag is held to the same rules.
    ("redis://127.0.0.1:6379/9", ["--reuse-port", "--port", "70000"], "--port"),
    ("redis://127.0.0.1:6379/9", ["--reuse-port", "--host", "192.0.2.1"], "cannot listen"),
])
def test_bad_serve_processes_exit_2_before_anything_starts(settings, redis_url, flags, fragment):
    settings.REDIS_URL = redis_url
    before = state()
    code, out, message = command("serve", "--no-demo", *flags)
    assert code == 2 and fragment in message and out == "", (code, out, message)
    assert state() == before


def _postgres_up() -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.mark.parametrize(("database_url", "fragment"), [
    ("sqlite:////nonexistent-dir-for-serve/db.sqlite3", "unable to open database file"),
    pytest.param("postgres://postgres@127.0.0.1:5432/papertrade_no_such_database", "does not exist",
                 marks=pytest.mark.skipif(not _postgres_up(), reason="no PostgreSQL on 127.0.0.1:5432")),
    ("postgres://postgres@127.0.0.1:1/papertrade", "Connection refused"),
])
def test_serve_against_a_database_it_cannot_reach_exits_2_with_the_reason(tmp_path, database_url, fragment):
    import subprocess

    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": "", "OUTPUTS_DIR": str(tmp_path / "out")}
    done = subprocess.run([sys.executable, "manage.py", "serve", "--no-demo", "--port", "0"], cwd=settings.BASE_DIR,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "cannot connect to the database" in done.stderr and fragment in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert not (tmp_path / "out").exists()


# --- 3. a huge body --------------------------------------------------------------------------------

def huge_bot_body(megabytes: int = 20) -> str:
    return json.dumps({**BASE_BOT, "params": {"fast": 3, "slow": 8, "note": "x" * (megabytes * 1024 * 1024)}})


@pytest.mark.parametrize(("method", "path"), [("post", "/bots"), ("put", "/bots/{id}"), ("patch", "/bots/{id}")])
def test_a_20_mb_body_is_refused_not_a_500_and_writes_nothing(api, bot, method, path):
    before = state()
    response = getattr(api, method)(path.format(id=bot.pk), data=huge_bot_body(), content_type="application/json")
    assert response.status_code in (400, 413), response.status_code
    assert state() == before


# Until config/api.py's RequestDataTooBig handler lands, ninja re-raises the error to Django's HTML
# handler400 (a 400 page, not JSON); drop this marker then.
def test_a_20_mb_body_gets_a_json_413_naming_the_limit(api):
    response = api.post("/bots", data=huge_bot_body(), content_type="application/json")
    body = assert_refused(response, statuses=(413,))
    assert str(settings.DATA_UPLOAD_MAX_MEMORY_SIZE) in body["detail"] or "too large" in body["detail"]


def test_a_20_mb_dashboard_form_is_refused_and_writes_nothing(browser):
    before = state()
    response = browser.post("/ui/bots/new/", {**FORM_BASE, "name": "n" * (20 * 1024 * 1024)})
    assert response.status_code in (400, 413)
    assert state() == before


# --- 4. a malformed CSV import ---------------------------------------------------------------------
# tests/test_csv_import.py covers layouts, missing columns, bad dates, NaN, high < low, duplicate and
# out-of-order timestamps, an empty file and a missing one; these are the rest.

GENERIC = "timestamp,open,high,low,close,volume"
T0 = 1_704_067_200  # 2024-01-01
GOOD_ROWS = [f"{T0 + i * 86_400},100,110,90,105,1000" for i in range(3)]

# (id, file bytes, expected line, fragment of the reason)
BAD_CSV = [
    ("binary garbage", bytes(range(256)) * 8, 2, "not UTF-8 text (byte 118 of the line)"),
    ("NUL bytes", (GENERIC + "\n" + GOOD_ROWS[0] + "\x00\x00\n").encode(), 2, "unparsable number"),
    ("UTF-16", (GENERIC + "\n" + "\n".join(GOOD_ROWS) + "\n").encode("utf-16"), 1, "not UTF-8"),
    ("Latin-1 in a cell", (GENERIC + "\n" + GOOD_ROWS[0] + "\n" + f"{T0 + 86_400},1\xe9,2,1,1,5\n").encode("latin-1"),
     3, "not UTF-8"),
    ("price -inf", f"{GENERIC}\n{T0},-inf,2,1,1,5\n".encode(), 2, "non-finite"),
    ("price 1e308", f"{GENERIC}\n{T0},1e308,1e308,1e308,1e308,5\n".encode(), 2, "price"),
    ("price 10**30", f"{GENERIC}\n{T0},{HUGE_INT},{HUGE_INT},{HUGE_INT},{HUGE_INT},5\n".encode(), 2, "price"),
    ("price of 400 digits", f"{GENERIC}\n{T0},{'9' * 400},1,1,1,5\n".encode(), 2, "non-finite"),
    ("volume 1e308", f"{GENERIC}\n{T0},1,2,1,1,1e308\n".encode(), 2, "volume"),
    ("volume 10**30", f"{GENERIC}\n{T0},1,2,1,1,{HUGE_INT}\n".encode(), 2, "volume"),
    ("volume NaN", f"{GENERIC}\n{T0},1,2,1,1,NaN\n".encode(), 2, "non-finite"),
    ("date past the year 9999 in UTC", f"{GENERIC}\n9999-12-31T23:59:59-05:00,1,2,1,1,5\n".encode(), 2, "out of range"),
    ("date in the year 1", f"{GENERIC}\n0001-01-01T00:00:00+05:00,1,2,1,1,5\n".encode(), 2, "out of range"),
    ("date in 1800", f"{GENERIC}\n1800-01-01,1,2,1,1,5\n".encode(), 2, "out of range"),
    ("epoch far in the past", f"{GENERIC}\n-99999999999,1,2,1,1,5\n".encode(), 2, "out of range"),
    ("epoch of 30 digits", f"{GENERIC}\n{HUGE_INT},1,2,1,1,5\n".encode(), 2, "too large"),
    ("Arabic-Indic digits", f"{GENERIC}\n\u0662\u0660\u0662\u0664-01-01,1,2,1,1,5\n".encode(), 2, "unparsable date"),
    ("a 200 kB field", f"{GENERIC}\n{T0},{'1' * 200_000},2,1,1,5\n".encode(), 2, "malformed CSV"),
    ("header only, CRLF", f"{GENERIC}\r\n".encode(), 1, "no data rows"),
    ("whitespace only", b" \n\n  \n", 1, "unrecognized header"),
]


@pytest.fixture
def seeded_store(tmp_path):
    """Bars already stored for the symbol, so a partial write would show."""
    path = tmp_path / "seed.csv"
    path.write_text("\n".join([GENERIC, *GOOD_ROWS]) + "\n")
    bars_import(path=path, symbol="X-USD", timeframe="1d")
    return path


@pytest.mark.parametrize(("label", "data", "line", "reason"), BAD_CSV, ids=[b[0] for b in BAD_CSV])
def test_a_malformed_csv_names_file_and_line_and_writes_nothing(seeded_store, tmp_path, label, data, line, reason):
    path = tmp_path / "bad.csv"
    path.write_bytes(data)
    before = state()
    with pytest.raises(BarFileError) as info:
        bars_import(path=path, symbol="X-USD", timeframe="1d")
    assert (info.value.path, info.value.line) == (str(path), line)
    assert str(info.value).startswith(f"{path}:{line}: ") and reason in str(info.value)
    code, out, message = command("import_bars", str(path), "--symbol", "X-USD", "--timeframe", "1d")
    assert (code, out) == (2, "") and message == str(info.value)
    assert state() == before


@pytest.mark.parametrize(("label", "target", "reason"), [
    ("a directory", lambda tmp: tmp, "directory"),
    ("a character device", lambda tmp: Path("/dev/zero"), "not a regular file"),
    ("a file that does not exist", lambda tmp: tmp / "nope.csv", "No such file"),
    ("a dangling symlink", lambda tmp: _dangling_csv(tmp), "No such file"),
    ("a NUL in the name", lambda tmp: Path("bars\x00.csv"), "null"),
])
def test_an_import_of_something_that_is_not_a_csv_file_exits_2(seeded_store, tmp_path, label, target, reason):
    path = target(tmp_path)
    before = state()
    code, out, message = command("import_bars", str(path), "--symbol", "X-USD", "--timeframe", "1d")
    assert code == 2 and out == "" and reason.lower() in message.lower(), message
    assert state() == before


def _dangling_csv(tmp: Path) -> Path:
    link = tmp / "gone.csv"
    link.symlink_to(tmp / "was-here.csv")
    return link


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads a chmod 000 file anyway")
def test_an_unreadable_csv_exits_2(seeded_store, tmp_path):
    path = tmp_path / "locked.csv"
    path.write_text("\n".join([GENERIC, *GOOD_ROWS]) + "\n")
    path.chmod(0)
    before = state()
    code, _, message = command("import_bars", str(path), "--symbol", "X-USD", "--timeframe", "1d")
    assert code == 2 and str(path) in message and "ermission" in message
    assert state() == before


@pytest.mark.parametrize(("symbol", "timeframe", "reason"), [
    ("ETH\x00", "1d", "invalid symbol"), ("eth-usd", "1d", "invalid symbol"), ("X" * 33, "1d", "invalid symbol"),
    ("", "1d", "invalid symbol"), ("  ", "1d", "invalid symbol"), ("ETH USD", "1d", "invalid symbol"),
    ("X-USD", "1y", "unknown timeframe"), ("X-USD", "", "unknown timeframe"),
])
def test_an_import_under_a_bad_symbol_or_timeframe_is_refused(seeded_store, symbol, timeframe, reason):
    before = state()
    with pytest.raises(ValueError, match=reason):
        bars_import(path=seeded_store, symbol=symbol, timeframe=timeframe)
    if timeframe == "1d":  # the command's --timeframe choices refuse the others itself
        code, _, message = command("import_bars", str(seeded_store), "--symbol", symbol, "--timeframe", timeframe)
        assert code == 2 and reason in message
    assert state() == before


# --- 5. a malformed --json-request -----------------------------------------------------------------
# tests/test_run_command.py covers the schema version, the command, unknown params and top-level
# keys, wrong types of paper and starting_cash, bad dates, malformed JSON, a JSON array, unknown bots
# and tickers, NaN and negative cash, and mixing flags in; these are the rest.

REQUEST = {"schema_version": "1.0", "request_id": "req_hostile", "command": "run",
           "params": {"ticker": "SYN-USD", "strategy": "sma_crossover", "params": {"fast": 3, "slow": 8},
                      "data_source": "synthetic", "bars": 50, "paper": True}}


def request(**params) -> str:
    return json.dumps({**REQUEST, "params": {**REQUEST["params"], **params}})


def top(**changes) -> str:
    return json.dumps({**REQUEST, **changes})


BAD_REQUESTS = [
    ("empty", "", "not valid JSON"),
    ("whitespace", "   \n", "not valid JSON"),
    ("truncated", request()[:-7], "not valid JSON"),
    ("a JSON string", '"run"', "must be a JSON object"),
    ("null", "null", "must be a JSON object"),
    ("a number", "1e308", "must be a JSON object"),
    ("NaN", "NaN", "must be a JSON object"),
    ("100,000 brackets", "[" * 100_000, "nested too deeply"),
    ("100,000 open objects", '{"a":' * 100_000, "nested too deeply"),
    ("params nested 100 deep", request(params=nested(100)), "params"),
    ("two megabytes", request(note="x" * 2_000_000), "too large"),
    ("params a list", top(params=[1, 2]), "params"),
    ("params null", top(params=None), "params"),
    ("schema_version a number", top(schema_version=1.0), "schema_version"),
    ("request_id a number", top(request_id=7), "request_id"),
    ("request_id with a space", top(request_id="req 1"), "request_id"),
    ("request_id of 101 characters", top(request_id="r" * 101), "request_id"),
    ("request_id with a NUL", top(request_id="req\x00"), "request_id"),
    ("seed 10**30", request(seed=HUGE_INT), "params.seed"),
    ("seed NaN", request(seed=NAN), "params.seed"),
    ("seed -1", request(seed=-1), "params.seed"),
    ("seed 1.5", request(seed=1.5), "params.seed"),
    ("bars 10**30", request(bars=HUGE_INT), "params.bars"),
    ("bars a string", request(bars="50"), "params.bars"),
    ("starting_cash 1e308", request(starting_cash=1e308), "params.starting_cash"),
    ("starting_cash Infinity", request(starting_cash=INF), "params.starting_cash"),
    ("starting_cash -Infinity", request(starting_cash=-INF), "params.starting_cash"),
    ("starting_cash 0", request(starting_cash=0), "params.starting_cash"),
    ("starting_cash true", request(starting_cash=True), "params.starting_cash"),
    ("ticker a number", request(ticker=5), "params.ticker"),
    ("ticker with a NUL", request(ticker="SYN\x00"), "params.ticker"),
    ("ticker of 33 characters", request(ticker="X" * 33), "params.ticker"),
    ("start a number", request(start=20220101), "params.start"),
    ("start in the year 10000", request(start="10000-01-01"), "not a date"),
    ("strategy params NaN", request(params={"fast": NAN, "slow": 8}), "fast"),
    ("strategy params unknown key", request(params={"fast": 3, "slow": 8, "x": 1}), "params.x"),
    ("timeframe 1y", request(timeframe="1y"), "timeframe"),
    ("data_source moon", request(data_source="moon"), "params.data_source"),
    ("output_root empty", request(output_root=""), "params.output_root"),
    ("output_root with a NUL", request(output_root="out\x00"), "params.output_root"),
    ("unknown nested key", request(paper={"enabled": True}), "params.paper"),
]


@pytest.mark.parametrize(("label", "text", "message"), BAD_REQUESTS, ids=[r[0] for r in BAD_REQUESTS])
def test_a_malformed_json_request_exits_2_and_writes_nothing(tmp_path, label, text, message):
    signal_file = tmp_path / "logs" / "signals.jsonl"
    before = state()
    code, out, error = command("run", "--json-request", text, "--signal-file", str(signal_file))
    assert code == 2, (out, error)
    assert message in error, error
    assert len(error) < 2_000  # the reason, not the request echoed back
    assert state() == before and not settings.OUTPUTS_DIR.exists() and not signal_file.parent.exists()


def _file(tmp: Path, data: bytes, name: str = "request.json") -> str:
    path = tmp / name
    path.write_bytes(data)
    return f"@{path}"


REQUEST_FILES = [
    ("missing", lambda tmp: f"@{tmp / 'nope.json'}", "no such file"),
    ("a directory", lambda tmp: f"@{tmp}", "a folder, not a file"),
    ("empty", lambda tmp: _file(tmp, b""), "not valid JSON"),
    ("truncated", lambda tmp: _file(tmp, request().encode()[:40]), "not valid JSON"),
    ("binary garbage", lambda tmp: _file(tmp, bytes(range(256))), "not UTF-8"),
    ("UTF-16", lambda tmp: _file(tmp, request().encode("utf-16")), "not UTF-8"),
    ("a JSON array", lambda tmp: _file(tmp, b"[1, 2, 3]"), "must be a JSON object"),
    ("two megabytes", lambda tmp: _file(tmp, b" " * 2_000_000), "larger than"),
    ("NaN seed", lambda tmp: _file(tmp, request(seed=NAN).encode()), "params.seed"),
]


@pytest.mark.parametrize(("label", "make", "message"), REQUEST_FILES, ids=[r[0] for r in REQUEST_FILES])
def test_a_bad_json_request_file_exits_2_and_writes_nothing(tmp_path, label, make, message):
    before = state()
    code, out, error = command("run", "--json-request", make(tmp_path))
    assert code == 2, (out, error)
    assert message in error, error
    assert state() == before and not settings.OUTPUTS_DIR.exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads a chmod 000 file anyway")
def test_an_unreadable_json_request_file_exits_2(tmp_path):
    target = _file(tmp_path, request().encode())
    Path(target[1:]).chmod(0)
    code, _, error = command("run", "--json-request", target)
    assert code == 2 and "unreadable" in error


@pytest.mark.parametrize(("label", "option", "target", "message"), [
    ("artifact root under a file", "output_root", lambda tmp: "/dev/null/sessions", "artifact root"),
    ("artifact root is a file", "output_root", lambda tmp: _file(tmp, b"x", "root")[1:], "not a folder"),
    ("signal file is a folder", "signal_file", lambda tmp: str(tmp), "is a folder"),
    ("signal file under a file", "signal_file", lambda tmp: "/dev/null/signals.jsonl", "--signal-file"),
    ("signal file empty", "signal_file", lambda tmp: "", "is a folder"),
])
@pytest.mark.parametrize("paper", [True, False], ids=["paper", "research"])
def test_an_unwritable_output_is_refused_before_anything_is_written(tmp_path, label, option, target, message, paper):
    # These failed after the run's row existed (it stayed "running"), with a traceback.
    path = target(tmp_path)
    before = state()
    if option == "output_root":
        code, out, error = command("run", "--json-request", request(output_root=path, paper=paper))
    else:
        code, out, error = command("run", "--json-request", request(paper=paper), "--signal-file", path)
    assert code == 2, (out, error)
    assert message in error, error
    assert state() == before and not settings.OUTPUTS_DIR.exists()


def _refused_on_sight(text: str) -> bool:
    from paper.replay import RunRequestError, parse_json_request

    try:
        parse_json_request(text)
    except RunRequestError:
        return True
    return False


def test_json_request_bad_input_from_the_real_command_line(tmp_path):
    signal_file = tmp_path / "logs" / "s.jsonl"
    # The requests refused before the database is asked anything (the process has none).
    argvs = [["run", "--json-request", text, "--signal-file", str(signal_file)]
             for _, text, _ in BAD_REQUESTS if len(text) < 100_000 and _refused_on_sight(text)]
    assert len(argvs) > 25
    argvs += [["run", "--json-request", make(tmp_path)] for _, make, _ in REQUEST_FILES]
    argvs += [["import_bars", str(tmp_path / "garbage.csv"), "--symbol", "X-USD", "--timeframe", "1d"]]
    (tmp_path / "garbage.csv").write_bytes(bytes(range(256)))
    results = manage_py(argvs, tmp_path)
    for argv, result in zip(argvs, results, strict=True):
        assert result["code"] == 2, (argv[:3], result)
        assert "Traceback" not in result["stderr"] and result["stderr"].strip(), (argv[:3], result)
        assert result["stdout"] == ""
    assert not signal_file.parent.exists()


# --- 6. a corrupt artifact folder ------------------------------------------------------------------
# A root with one good session and one broken thing. `unreadable` says the broken session must be
# listed as unreadable (a PAPER_SESSION_UNREADABLE alert); otherwise it is a visible issue, or (a
# file in the root) not a session at all.

BROKEN = "ps_20261121_0900_broken"


def _status(folder: Path) -> Path:
    return folder / c.STATUS


def _replace(path: Path, data: bytes) -> None:
    path.unlink()
    path.write_bytes(data)


def _edit_json(path: Path, **changes) -> None:
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc))


def _self_loop(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.name)


def _folder_loop(folder: Path) -> None:
    shutil.rmtree(folder)
    folder.symlink_to(folder.name)


def _dir_for_file(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _file_for_folder(folder: Path) -> None:
    shutil.rmtree(folder)
    folder.write_bytes(b"not a folder")


def _huge(path: Path) -> None:
    path.unlink()
    with open(path, "wb") as fh:  # sparse: 200 MB on paper, nothing on disk
        fh.truncate(200 * 1024 * 1024)


def _chmod_000(path: Path) -> None:
    path.chmod(0)


def _bad_name(folder: Path) -> None:
    # A folder name that is not UTF-8 (the bytes of a Latin-1 "é").
    os.rename(os.fsencode(folder), os.fsencode(folder.parent) + b"/ps_20261121_0900_caf\xe9")


def _dangling_folder(folder: Path) -> None:
    shutil.rmtree(folder)
    folder.symlink_to(folder.parent / "moved-away")


CORRUPTIONS = [
    ("status truncated", lambda f: _replace(_status(f), _status(f).read_bytes()[:25]), True),
    ("status a JSON list", lambda f: _replace(_status(f), b'["success"]'), True),
    ("status binary garbage", lambda f: _replace(_status(f), bytes(range(256)) * 4), True),
    ("status empty", lambda f: _replace(_status(f), b""), True),
    ("status nested 100,000 deep", lambda f: _replace(_status(f), b"[" * 100_000 + b"]" * 100_000), True),
    ("status a 5,000-digit number", lambda f: _replace(_status(f), b'{"status": ' + b"9" * 5000 + b"}"), True),
    ("status an unknown word", lambda f: _edit_json(_status(f), status=["success"] * 1000), True),
    ("status a symlink loop", lambda f: _self_loop(_status(f)), True),
    ("status a directory", lambda f: _dir_for_file(_status(f)), True),
    ("status 200 MB", lambda f: _huge(_status(f)), True),
    ("status unreadable (chmod 000)", lambda f: _chmod_000(_status(f)), True),
    ("session folder a symlink loop", _folder_loop, True),
    ("session folder a dangling symlink", _dangling_folder, True),
    ("session folder name not UTF-8", _bad_name, False),
    ("a file where the session folder is", _file_for_folder, None),
    ("dates past the year 9999", lambda f: _edit_json(_status(f), started_at="9999-12-31T23:59:59-05:00",
                                                     finished_at="0001-01-01T00:00:00+05:00"), False),
    ("dates not strings", lambda f: _edit_json(_status(f), started_at=5, updated_at={"a": 1}), False),
    ("metrics NaN and Infinity", lambda f: _replace(f / c.METRICS, b'{"sharpe": NaN, "total_return": Infinity, '
                                                                   b'"max_drawdown": -Infinity, "bars": 1e999}'), False),
    ("metrics of the wrong types", lambda f: _replace(f / c.METRICS, json.dumps(
        {"sharpe": "high", "max_drawdown": [1], "bars": 10**400, "num_trades": True,
         "total_pnl": {"a": 1}}).encode()), False),
    ("metrics nested 5,000 deep", lambda f: _replace(f / c.METRICS, b'{"a":' * 5000 + b"1" + b"}" * 5000), False),
    ("report a list", lambda f: _replace(f / c.REPORT, b"[]"), False),
    ("metadata garbage", lambda f: _replace(f / c.METADATA, b"\xff\xfe\x00garbage"), False),
    ("reason and error of odd types", lambda f: _edit_json(_status(f), status="failed", status_reason={"x": [1]},
                                                          error_type=1e308, error_message="\ud800" * 10), False),
    ("artifacts a file", lambda f: (shutil.rmtree(f / c.ARTIFACTS_DIR), (f / c.ARTIFACTS_DIR).write_text("x")), False),
]
ROOT_OPS = {
    "list": lambda root: ["--paper-sessions-list", str(root), "--json"],
    "health": lambda root: ["--paper-sessions-health", str(root), "--json"],
    "alerts": lambda root: ["--paper-sessions-alerts", str(root), "--paper-stale-minutes", "60"],
    "index": lambda root: ["--paper-sessions-index", str(root), "--json"],
    "promotion": lambda root: ["--paper-sessions-promotion", str(root), "--json"],
    "list text": lambda root: ["--paper-sessions-list", str(root)],
    "health text": lambda root: ["--paper-sessions-health", str(root)],
    "promotion text": lambda root: ["--paper-sessions-promotion", str(root)],
}


def corrupt_root(base: Path, corrupt) -> Path:
    root = base / "paper_sessions"
    fx.session_write(root, fx.SPECS[0])  # GOOD: success, complete
    broken = fx.session_write(root, fx.SessionSpec(BROKEN, c.SUCCESS, fx.NOW, "completed", finished_at=fx.NOW))
    corrupt(broken)
    return root


def strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def check_root_ops(root: Path, results: dict, unreadable: bool | None) -> None:
    """What every operation must say about a root with GOOD and a broken session."""
    for op, result in results.items():
        assert result["code"] == 0, (op, result)
        if op in ("list", "health", "alerts", "index", "promotion"):
            strict_json(result["stdout"])
    ids = [r["session_id"] for r in strict_json(results["list"]["stdout"])]
    assert fx.GOOD in ids
    alerts = strict_json(results["alerts"]["stdout"])["alerts"]
    unreadable_alerts = [a for a in alerts if a["code"] == c.ALERT_UNREADABLE]
    if unreadable:
        assert len(ids) == 2 and len(unreadable_alerts) == 1, alerts
        assert unreadable_alerts[0]["session_id"] != fx.GOOD and unreadable_alerts[0]["message"]
    else:
        assert unreadable_alerts == [], alerts
        assert len(ids) == (1 if unreadable is None else 2)
    index = strict_json((root / c.INDEX_JSON).read_text())
    assert [row["session_id"] for row in index["sessions"]] == ids
    with open(root / c.INDEX_CSV, encoding="utf-8", newline="") as fh:
        assert [row[0] for row in csv.reader(fh)] == ["session_id", *ids]
    promotion = strict_json(results["promotion"]["stdout"])
    assert [s["session_id"] for s in promotion["ready"]] == [fx.GOOD]


@pytest.mark.parametrize(("label", "corrupt", "unreadable"), CORRUPTIONS, ids=[k[0] for k in CORRUPTIONS])
def test_a_corrupt_session_folder_is_an_issue_never_a_crash(tmp_path, label, corrupt, unreadable):
    if label.endswith("(chmod 000)") and os.geteuid() == 0:
        pytest.skip("root reads a chmod 000 file anyway")
    root = corrupt_root(tmp_path, corrupt)
    before = state()
    results = {}
    for op, argv in ROOT_OPS.items():
        code, out, error = command("run", *argv(root))
        results[op] = {"code": code, "stdout": out, "stderr": error}
    check_root_ops(root, results, unreadable)
    # show, by folder: a broken session is shown as what it is, or refused with a message.
    broken = next((p for p in root.iterdir() if p.name not in (fx.GOOD, c.INDEX_CSV, c.INDEX_JSON)), root / BROKEN)
    for as_json in ([], ["--json"]):
        code, out, error = command("run", "--paper-sessions-show", str(broken), *as_json)
        if code == 0:
            shown = strict_json(out) if as_json else out
            assert ("unknown" if unreadable else "") in (shown["status"] if as_json else out)
        else:
            assert code == 2 and error and str(broken.name)[:10] in error, error
    assert state()["counts"] == before["counts"]  # the index is the only file written


@pytest.mark.parametrize(("label", "corrupt", "unreadable"), CORRUPTIONS, ids=[k[0] for k in CORRUPTIONS])
def test_a_corrupt_session_folder_is_an_issue_in_the_api_and_the_dashboard(api, browser, label, corrupt, unreadable):
    if label.endswith("(chmod 000)") and os.geteuid() == 0:
        pytest.skip("root reads a chmod 000 file anyway")
    corrupt_root(settings.OUTPUTS_DIR, corrupt)  # the root the API and the pages read
    for path in ("/paper/health", "/paper/alerts", "/paper/promotion"):
        response = api.get(path)
        assert response.status_code == 200, (path, response.content[:300])
        doc = strict_json(response.content.decode())
        if path == "/paper/alerts":
            codes = [a["code"] for a in doc["alerts"]]
            assert (c.ALERT_UNREADABLE in codes) == bool(unreadable), codes
    for path in ("/ui/health/", "/ui/alerts/", "/ui/promotion/"):
        assert browser.get(path).status_code == 200, path


def test_corrupt_roots_from_the_real_command_line(tmp_path):
    """No traceback on stderr for any operation on any corrupt root, as a real process sees it."""
    argvs, expect = [], []
    for i, (label, corrupt, _unreadable) in enumerate(CORRUPTIONS):
        if label.endswith("(chmod 000)") and os.geteuid() == 0:
            continue
        root = corrupt_root(tmp_path / f"r{i}", corrupt)
        for op, argv in ROOT_OPS.items():
            argvs.append(["run", *argv(root)])
            expect.append((label, op, 0))
        for entry in sorted(root.iterdir()):
            if entry.name not in (fx.GOOD, c.INDEX_CSV, c.INDEX_JSON):
                argvs.append(["run", "--paper-sessions-show", os.fsdecode(entry)])
                expect.append((label, "show", None))
    results = manage_py(argvs, tmp_path)
    for (label, op, code), result in zip(expect, results, strict=True):
        assert "Traceback" not in result["stderr"], (label, op, result["stderr"][-2000:])
        assert result["code"] in ((0, 2) if code is None else (code,)), (label, op, result)
        if result["code"] == 2:
            assert result["stderr"].strip() and not result["stdout"]


@pytest.mark.parametrize("damage", [
    pytest.param(lambda p: p.write_bytes(b"[1, 2]"), id="a JSON list"),
    pytest.param(lambda p: p.write_bytes(b"[" * 100_000), id="100,000 brackets"),
    pytest.param(lambda p: p.write_bytes(bytes(range(256))), id="binary garbage"),
    pytest.param(lambda p: (p.unlink(), p.symlink_to(p.name)), id="a symlink loop"),
    pytest.param(lambda p: p.write_text(json.dumps({"started_at": "yesterday", "finished_at": 5, "terminal": True})),
                 id="times that are not times"),
    pytest.param(lambda p: p.write_text(json.dumps({"started_at": "2026-01-01T00:00:00"})), id="a naive start"),
])
def test_a_session_ends_in_its_folder_whatever_its_status_file_became(tmp_path, damage):
    """A live session's end (another process picking the folder up) survives a damaged status file."""
    from paper.artifacts import RunArtifacts

    folder = RunArtifacts(tmp_path, BROKEN)
    folder.start(metadata={}, config={}, bars_total=10)
    damage(folder.path(c.STATUS))
    later = RunArtifacts(tmp_path, BROKEN)
    later.load_status()
    later.mark_terminal(status=c.ABORTED, status_reason="kill_switch: drill", bars_processed=3)
    later.finish(status=c.ABORTED, status_reason="kill_switch: drill", result=None, request_id="", data={},
                 contract_type=c.PAPER_CONTRACT_TYPE, extra_metrics={"starting_cash": 1000.0})
    status = strict_json(folder.path(c.STATUS).read_text())
    assert (status["status"], status["terminal"], status["status_reason"]) == (c.ABORTED, True, "kill_switch: drill")
    assert isinstance(status["duration_seconds"], float)


@pytest.mark.parametrize(("argv", "message"), [
    (["--paper-sessions-promotion", "{root}", "--min-sharpe", "nan"], "min_sharpe"),
    (["--paper-sessions-promotion", "{root}", "--min-sharpe", "inf"], "min_sharpe"),
    (["--paper-sessions-promotion", "{root}", "--max-drawdown", "nan"], "max_drawdown"),
    (["--paper-sessions-promotion", "{root}", "--min-bars", "-1"], "min_bars"),
    (["--paper-sessions-alerts", "{root}", "--paper-stale-minutes", "nan"], "stale"),
    (["--paper-sessions-alerts", "{root}", "--paper-stale-minutes", "inf"], "stale"),
    (["--paper-sessions-alerts", "{root}", "--paper-stale-minutes", "-5"], "stale"),
    (["--paper-sessions-list", "{root}/nowhere"], "no such artifact root"),
    (["--paper-sessions-list", "{root}/ps_x\x00"], "no such artifact root"),
    (["--paper-sessions-list", "{root}/" + fx.GOOD + "/" + c.STATUS], "no such artifact root"),
    (["--paper-sessions-index", "/dev/null"], "no such artifact root"),
    (["--paper-sessions-show", "{root}/nowhere"], "not found"),
    (["--paper-sessions-show", "ps_\x00", "--paper-sessions-root", "{root}"], "not a paper session"),
    (["--paper-sessions-show", "ps_nope", "--paper-sessions-root", "{root}"], "no paper session"),
    (["--paper-sessions-show", "{root}"], "looks like a paper session root"),
    (["--paper-sessions-show", "{root}/" + fx.GOOD + "/" + c.STATUS], "not a folder"),
    (["--paper-sessions-show", "x", "--paper-sessions-root", "{root}/nowhere"], "not found"),
])
def test_bad_runbook_arguments_exit_2_with_a_message(tmp_path, argv, message):
    root = tmp_path / "paper_sessions"
    fx.session_write(root, fx.SPECS[0])
    before = files_under(root)
    code, out, error = command("run", *[a.replace("{root}", str(root)) for a in argv])
    assert code == 2 and out == "", (out, error)
    assert message in error, error
    assert files_under(root) == before


# --- 7. WebSocket input ----------------------------------------------------------------------------
# tests/test_consumers.py covers anonymous clients, origins, an unknown run and a 10,000-character
# message; these are the rest.

def _run_and_token() -> tuple[str, str]:
    from ledger.services import run_create

    _, token = api_token_create(user=User.objects.create_user("ws-operator"))
    bot = bot_create(name="ws", strategy="buy_and_hold", symbols=["ETH-USD"])
    run = run_create(bot=bot, starting_cash=100_000, symbol="ETH-USD", timeframe="1d", data_source="synthetic",
                     seed=1, config_snapshot={}, config_hash="x")
    return run.id, token


async def _socket(path_suffix: str = ""):
    """A token-authenticated socket on a real run's frames (not connected yet); `counts` is the
    state before anything was sent."""
    from channels.db import database_sync_to_async
    from channels.testing import WebsocketCommunicator

    from config.asgi import application

    run_id, token = await database_sync_to_async(_run_and_token)()
    ws = WebsocketCommunicator(application, f"/ws/paper/{run_id}{path_suffix}?token={token}")
    ws.counts = await database_sync_to_async(state)()
    return ws


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("send", "expect"), [
    pytest.param({"bytes_data": b"\x00\xff" * 100}, "error", id="a binary frame"),
    pytest.param({"text_data": "{not json"}, "error", id="invalid JSON"),
    pytest.param({"text_data": '{"stage": "order.placed", "qty": 1e308}'}, "error", id="a frame of its own"),
    pytest.param({"text": ""}, "error", id="an empty message"),
    pytest.param({"text": None, "bytes": None}, "error", id="neither text nor bytes"),
    pytest.param({"text_data": "\u00e9" * 3000}, 4009, id="3,000 two-byte characters (6,000 bytes)"),
    pytest.param({"bytes_data": b"x" * 5000}, 4009, id="a 5,000-byte binary frame"),
    pytest.param({"text_data": "[" * 5000}, 4009, id="5,000 brackets"),
])
async def test_hostile_client_messages_get_an_error_or_a_close(send, expect):
    from channels.db import database_sync_to_async

    ws = await _socket()
    connected, _ = await ws.connect()
    assert connected
    if "text" in send or "bytes" in send:  # what send_to refuses to send, a client can
        await ws.send_input({"type": "websocket.receive", **send})
    else:
        await ws.send_to(**send)
    out = await ws.receive_output(timeout=2)
    if expect == "error":
        assert out["type"] == "websocket.send" and json.loads(out["text"])["stage"] == "error"
        await ws.disconnect()
    else:  # an error frame that names the code, then the close
        assert out["type"] == "websocket.send" and json.loads(out["text"])["code"] == expect
        assert await ws.receive_output(timeout=2) == {"type": "websocket.close", "code": expect}
    assert await database_sync_to_async(state)() == ws.counts


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_client_that_keeps_talking_is_closed():
    from paper.consumers import MAX_CLIENT_MESSAGES

    ws = await _socket()
    assert (await ws.connect())[0]
    for _ in range(MAX_CLIENT_MESSAGES):
        await ws.send_to(text_data="hi")
        assert (await ws.receive_output(timeout=2))["type"] == "websocket.send"
    await ws.send_to(text_data="hi")
    assert json.loads((await ws.receive_output(timeout=2))["text"])["code"] == 4008
    assert await ws.receive_output(timeout=2) == {"type": "websocket.close", "code": 4008}


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_the_no_route_consumer_closes_with_4404():
    from channels.routing import URLRouter
    from channels.testing import WebsocketCommunicator
    from django.urls import re_path

    from paper.consumers import NoRouteConsumer

    app = URLRouter([re_path(r"^ws/", NoRouteConsumer.as_asgi())])
    ws = WebsocketCommunicator(app, "/ws/paper/" + "x" * 5000)
    assert await ws.connect() == (True, None)  # accepted, then an error frame and the close
    assert json.loads((await ws.receive_output(timeout=2))["text"])["code"] == 4404
    assert await ws.receive_output(timeout=2) == {"type": "websocket.close", "code": 4404}


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("suffix", [pytest.param("x" * 5000, id="a 5,000-character run id"),
                                    pytest.param("/../../admin", id="dots"), pytest.param("%00", id="NUL")])
async def test_an_unroutable_socket_path_is_closed_not_a_traceback(suffix):
    ws = await _socket(suffix)
    assert (await ws.connect())[0]  # accepted, then an error frame and the close
    assert json.loads((await ws.receive_output(timeout=2))["text"])["code"] == 4404
    assert await ws.receive_output(timeout=2) == {"type": "websocket.close", "code": 4404}
