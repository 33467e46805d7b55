"""Fuzz the API with schemathesis: every operation of /openapi.json, authenticated, every check.

In process (the WSGI app on pytest-django's test database): per operation, schemathesis's
coverage cases plus MAX_EXAMPLES generated ones, positive and negative, derandomized so CI runs
the same cases every time. Every check runs: every response must be a documented status with a
matching body, content type and headers (0 server errors, 0 schema violations), in under
MAX_RESPONSE_SECONDS; a valid request must be accepted and an invalid one refused. A valid-looking
request may be refused only for a rule JSON Schema cannot state, named in
tests/schemathesis_hooks.py (SEMANTIC_REFUSALS).

The world each case meets: a staff user with two tokens (the fuzz authenticates with one and may
revoke the other), 1,000 real ETH-USD daily bars, a bot with a fresh backtest (its paper gate passes), a
finished run with fills, orders, equity and frames, and a queued run. Before every case the kill
switch is re-armed and the bot restored, so a `POST /kill-switch` or a `PUT /bots/{id}` of one
case does not decide what the next one sees. Generated ids are mostly pointed at those rows
(`map_path_parameters`), so the operations are fuzzed on objects that exist, not only on 404s.

A longer exploratory run against a live server: tests/schemathesis_hooks.py.
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pytest
import schemathesis
from django.contrib.auth.models import User
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck, settings

from config.wsgi import application
from tests import schemathesis_hooks as hooks

pytestmark = pytest.mark.django_db

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "25"))
CASE_LOG = os.environ.get("SCHEMATHESIS_CASE_LOG")

# A backtest runs inside its request; none may take this long (one once took over 10 s).
MAX_RESPONSE_SECONDS = 15

schema = schemathesis.openapi.from_wsgi("/openapi.json", application)
schema.config.generation.update(database="none")
schema.config.checks.update(included_check_names=["all"], max_response_time=MAX_RESPONSE_SECONDS)


@dataclass
class World:
    headers: dict
    user: User
    bot_fields: dict


@pytest.fixture
def keep_test_connection():
    """The WSGI handler closes the database connection when a request ends; here that connection
    holds the test's transaction (Django's test client disconnects the same signal)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def quiet_request_log():
    """Thousands of refused requests would each log a django.request warning."""
    logger = logging.getLogger("django.request")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


@pytest.fixture
def world(db, settings, eth_bars, keep_test_connection, quiet_request_log) -> World:
    from bots.services import backtest_run, bot_create
    from ledger.services import frames_record, run_create, run_persist
    from paper.models import Bar
    from paper.tokens import api_token_create

    user = User.objects.create_user("fuzz", is_staff=True)  # no password: hashing one costs 0.7 s
    auth, raw = api_token_create(user=user, name="fuzz")
    spare, _ = api_token_create(user=user, name="spare")
    recent = eth_bars.slice(len(eth_bars) - 1000, len(eth_bars))  # 2021-09 .. 2024-05, real ETH-USD
    Bar.objects.bulk_create([
        Bar(symbol="ETH-USD", timeframe="1d", ts=datetime.fromtimestamp(int(recent.ts[i]), UTC),
            open=float(recent.open[i]), high=float(recent.high[i]), low=float(recent.low[i]),
            close=float(recent.close[i]), volume=float(recent.volume[i]))
        for i in range(len(recent))
    ])
    bot = bot_create(name="fuzz-bot", strategy="sma_crossover", params={"fast": 3, "slow": 8},
                     symbols=["ETH-USD", "BTC-USD"], timeframe="1d", risk={"max_drawdown_pct": 90})
    backtest_run(bot=bot, start=date(2022, 1, 1), end=date(2023, 12, 31))  # the paper gate passes
    config = bot.trading_config()
    result = config.build_engine(starting_cash=100_000, seed=0).run(recent.slice(0, 300))
    finished = run_create(bot=bot, starting_cash=100_000, symbol="ETH-USD", timeframe="1d", data_source="stored",
                          seed=0, config_snapshot=config.canonical(), config_hash=config.config_hash,
                          duration_minutes=300)
    run_persist(run=finished, result=result, status="success", status_reason="completed")
    now = timezone.now().isoformat()
    frames_record(run=finished, frames=[{"task_id": finished.id, "stage": "bar.received", "message": f"bar {i}",
                                         "timestamp": now, "seq": i} for i in range(1, 4)])
    queued = run_create(bot=bot, starting_cash=1000, symbol="ETH-USD", timeframe="1d", data_source="synthetic",
                        seed=1, config_snapshot=config.canonical(), config_hash=config.config_hash)
    hooks.KNOWN.update(bot_id=bot.pk, run_ids=[finished.id, queued.id], token_id=spare.pk,
                       protected_token_id=auth.pk)
    fields = {f: getattr(bot, f) for f in ("name", "strategy", "params", "symbols", "timeframe", "risk",
                                           "execution", "config_hash")}
    return World(headers={"Authorization": f"Bearer {raw}"}, user=user, bot_fields=fields)


def _reset(world: World) -> None:
    """What one case did must not decide what the next one meets."""
    from bots.models import Bot
    from risk.services import kill_switch_rearm

    kill_switch_rearm()
    Bot.objects.filter(pk=hooks.KNOWN["bot_id"]).update(**world.bot_fields)


hooks.install(schema)


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_every_operation_keeps_its_schema(case, world):
    if CASE_LOG:  # bench/fuzz.py counts the cases that ran
        with open(CASE_LOG, "a", encoding="utf-8") as fh:
            fh.write(f"{case.operation.label}\n")
    _reset(world)
    hooks.protect_auth_token(case)
    case.call_and_validate(headers=world.headers)


def test_every_operation_is_fuzzed():
    """Nothing is excluded: the fuzz covers the schema's whole operation list."""
    from tests.test_api_auth import EXPECTED_OPERATIONS

    fuzzed = {(op.ok().method.upper(), op.ok().path) for op in schema.get_all_operations()}
    assert fuzzed == EXPECTED_OPERATIONS


def test_every_documented_error_has_the_error_body(client):
    served = client.get("/openapi.json").json()
    for path, methods in served["paths"].items():
        for method, op in methods.items():
            codes = {int(c) for c in op["responses"]}
            assert {401, 503} <= codes, (method, path)
            for code in codes - {200, 201, 204}:
                ref = op["responses"][str(code)]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorOut"), (method, path, code)


def test_the_schema_states_bounds_in_json_schema_words(client):
    """pydantic publishes a bound it cannot place as "ge"/"gt"/"le"/"lt", which no client reads."""
    served = json.dumps(client.get("/openapi.json").json())
    assert not re.findall(r'"(ge|gt|le|lt)": ', served)
