"""Every bound the API accepts, the database holds (issue 13, finding 5: after_seq=2**31 was
allowed by the API and answered 500 on PostgreSQL's 32-bit column).

Read off the OpenAPI schema: each operation's integer path and query parameters are sent at
their documented maximum (and minimum); none may answer a server error.
"""
from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User

from bots.services import bot_create
from ledger.services import run_create
from paper.tokens import api_token_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(client):
    user = User.objects.create_user("bounds", password="pw", is_staff=True)
    _, token = api_token_create(user=user)
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    bot = bot_create(name="b", strategy="buy_and_hold", symbols=["ETH-USD"], owner=user)
    run = run_create(bot=bot, starting_cash=1, symbol="ETH-USD", timeframe="1d", data_source="synthetic", seed=0,
                     config_snapshot={}, config_hash="x")
    return client, bot, run


def _operations():
    from config.api import api

    schema = api.get_openapi_schema()
    for path, item in schema["paths"].items():
        for method, op in item.items():
            params = [p for p in op.get("parameters", []) if p.get("schema", {}).get("type") == "integer"
                      or any(s.get("type") == "integer" for s in p.get("schema", {}).get("anyOf", []))]
            for param in params:
                spec = param["schema"]
                spec = next((s for s in spec.get("anyOf", [spec]) if s.get("type") == "integer"), spec)
                for bound in ("maximum", "minimum", "exclusiveMaximum"):
                    if bound in spec:
                        value = spec[bound] - 1 if bound == "exclusiveMaximum" else spec[bound]
                        yield method, path, param["in"], param["name"], value


CASES = sorted(set(_operations()))


def test_the_schema_documents_bounds_to_check():
    assert any(name == "after_seq" for *_, name, _ in CASES)
    assert all(value < 2**63 for *_, value in CASES)


@pytest.mark.parametrize("method,path,where,name,value", CASES)
def test_every_documented_integer_bound_answers_without_a_server_error(api, method, path, where, name, value):
    client, bot, run = api
    fill = {"bot_id": str(bot.pk), "run_id": run.id, "token_id": "1"}
    url = re.sub(r"\{(\w+)\}", lambda m: str(value) if (where == "path" and m.group(1) == name) else fill.get(m.group(1), "1"),
                 path)
    query = {name: value} if where == "query" else {}
    response = getattr(client, method)(url, query if method == "get" else None,
                                       **({} if method == "get" else {"content_type": "application/json"}))
    assert response.status_code < 500, (method, url, query, response.content[:300])
