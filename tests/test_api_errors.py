"""Bad input gets a 4xx JSON body with a code and a reason, never a 500.

Validation errors name the field as `body.<field>`, `query.<param>` or `path.<param>`.
"""
import json

import pytest
from django.contrib.auth.models import User

from bots.models import Bot
from bots.services import bot_create
from ledger.models import PaperTradingRun
from paper.tokens import api_token_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(db):
    return User.objects.create_user("alice")


@pytest.fixture
def api(client, alice):
    _, token = api_token_create(user=alice)
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


@pytest.fixture
def bot(alice):
    return bot_create(name="errors", strategy="sma_crossover", params={"fast": 3, "slow": 8},
                      symbols=["ETH-USD"], timeframe="1d", owner=alice)


def send(api, method, url, text):
    return api.generic(method, url, data=text, content_type="application/json")


def fields(response) -> list[str]:
    return [e["field"] for e in response.json()["errors"]]


def assert_invalid(response, field, status=422):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] in ("invalid_input", "invalid_session", "invalid_bot") and body["detail"]
    assert field in fields(response), body


# --- unknown things ------------------------------------------------------------------------------

def test_an_unknown_bot_is_404(api):
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        response = send(api, method, "/bots/999", json.dumps({"name": "x", "strategy": "buy_and_hold", "symbols": ["A"]}))
        assert response.status_code == 404 and response.json()["code"] == "bot_not_found", method
    response = send(api, "POST", "/bots/999/paper", '{"starting_cash":100000,"duration_minutes":60}')
    assert response.status_code == 404 and "999" in response.json()["detail"]


def test_a_method_a_path_does_not_have_is_a_json_405_naming_the_allowed_ones(api):
    response = api.put("/kill-switch")
    assert response.status_code == 405 and response["Content-Type"] == "application/json"
    assert set(response["Allow"].split(", ")) == {"GET", "POST"}
    body = response.json()
    assert body["code"] == "method_not_allowed" and "PUT" in body["detail"] and "GET" in body["detail"]


def test_an_unknown_url_is_a_json_404(api):
    for url in ("/bots/abc", "/nowhere", "/paper/x/nothing"):
        response = api.get(url)
        assert response.status_code == 404 and response.json()["code"] == "not_found", url


# --- session bodies ------------------------------------------------------------------------------

@pytest.mark.parametrize("text,field", [
    ('{"starting_cash":0,"duration_minutes":60}', "body.starting_cash"),
    ('{"starting_cash":-5,"duration_minutes":60}', "body.starting_cash"),
    ('{"starting_cash":100000,"duration_minutes":0}', "body.duration_minutes"),
    ('{"starting_cash":100000,"duration_minutes":-1}', "body.duration_minutes"),
    ('{"starting_cash":NaN,"duration_minutes":60}', "body.starting_cash"),
    ('{"starting_cash":100000,"duration_minutes":Infinity}', "body.duration_minutes"),
    ('{"starting_cash":1e999,"duration_minutes":60}', "body.starting_cash"),
    ('{"starting_cash":"lots","duration_minutes":60}', "body.starting_cash"),
    ('{"starting_cash":100000,"duration_minutes":[60]}', "body.duration_minutes"),
    ('{"starting_cash":100000}', "body.duration_minutes"),
    ('{"starting_cash":100000,"duration_minutes":60,"leverage":10}', "body.leverage"),
    ('{"starting_cash":100000,"duration_minutes":60,"data_source":"moon"}', "body.data_source"),
    ('{"starting_cash":100000,"duration_minutes":60,"seed":-1}', "body.seed"),
    ('{"starting_cash":100000,"duration_minutes":60,"seed":1.5}', "body.seed"),
    ('{"starting_cash":100000,"duration_minutes":60,"start":"yesterday"}', "body.start"),
    ('{"starting_cash":100000,"duration_minutes":60,"warmup_bars":100000}', "body.warmup_bars"),
    ("[1, 2]", "body"),
    ('"cash"', "body"),
    ("", "body"),
])
def test_bad_session_input_is_422_naming_the_field(api, bot, text, field):
    assert_invalid(send(api, "POST", f"/bots/{bot.pk}/paper", text), field)
    assert not PaperTradingRun.objects.exists()


@pytest.mark.parametrize("text,field", [
    ('{"starting_cash":2e12,"duration_minutes":60}', "body.starting_cash"),
    ('{"starting_cash":100000,"duration_minutes":1e9}', "body.duration_minutes"),
    ('{"starting_cash":100000,"duration_minutes":60,"symbol":"DOGE-USD"}', "symbol"),
])
def test_limits_the_session_service_enforces_are_422_too(api, bot, text, field):
    assert_invalid(send(api, "POST", f"/bots/{bot.pk}/paper", text), field)


def test_an_unknown_field_is_named_in_the_detail(api, bot):
    response = send(api, "POST", f"/bots/{bot.pk}/paper", '{"starting_cash":1,"duration_minutes":1,"levrage":2}')
    assert response.status_code == 422 and "body.levrage" in response.json()["detail"]


@pytest.mark.parametrize("text", [
    '{"starting_cash":100000,',
    "{'starting_cash': 100000}",
    "starting_cash=100000&duration_minutes=60",
    '{"starting_cash":100000,"duration_minutes":60}}',
    "[" * 100_000,
])
def test_malformed_json_is_400(api, bot, text):
    response = send(api, "POST", f"/bots/{bot.pk}/paper", text)
    assert response.status_code == 400
    assert response.json()["code"] == "malformed_json" and "not valid JSON" in response.json()["detail"]


def test_a_body_that_is_not_utf8_is_400(api, bot):
    response = api.post(f"/bots/{bot.pk}/paper", data=b'{"starting_cash":\xff}', content_type="application/json")
    assert response.status_code == 400 and response.json()["code"] == "malformed_json"


# --- bot bodies ----------------------------------------------------------------------------------

@pytest.mark.parametrize("body,field", [
    ({"strategy": "sma_crossover", "symbols": ["ETH-USD"]}, "body.name"),
    ({"name": "b", "strategy": "sma_crossover", "symbols": "ETH-USD"}, "body.symbols"),
    ({"name": "b", "strategy": "sma_crossover", "symbols": ["ETH-USD"], "colour": "red"}, "body.colour"),
    ({"name": "b", "strategy": "sma_crossover", "symbols": ["ETH-USD"], "params": [3, 8]}, "body.params"),
    ({"name": "b\x00", "strategy": "sma_crossover", "symbols": ["ETH-USD"]}, "body.name"),
])
def test_bad_bot_input_is_422_naming_the_field(api, body, field):
    assert_invalid(send(api, "POST", "/bots", json.dumps(body)), field)
    assert not Bot.objects.exists()


@pytest.mark.parametrize("params,field", [('{"fast": NaN, "slow": 8}', "body.params.fast"),
                                          ('{"fast": 3, "slow": Infinity}', "body.params.slow"),
                                          ('{"fast": 3, "x": [1e999]}', "body.params.x")])
def test_non_finite_numbers_inside_params_are_refused(api, params, field):
    text = '{"name":"b","strategy":"sma_crossover","symbols":["ETH-USD"],"params":' + params + "}"
    response = send(api, "POST", "/bots", text)
    assert_invalid(response, field)
    assert "finite" in response.json()["detail"]


@pytest.mark.parametrize("params,field", [('{"fast": {"deep": 1}}', "body.params.fast"),
                                          ('{"fast": [[1]]}', "body.params.fast"),
                                          ('{"not a name": 1}', "body.params"),
                                          ('{"note": "a\\u0000b"}', "body.params.note")])
def test_params_are_flat_named_values(api, params, field):
    text = '{"name":"b","strategy":"sma_crossover","symbols":["ETH-USD"],"params":' + params + "}"
    response = send(api, "POST", "/bots", text)
    assert response.status_code == 422 and any(f.startswith(field) for f in fields(response)), response.json()


def test_a_quantity_step_too_small_to_divide_by_is_refused(api, bot):
    # A step of 5e-324 made the engine's quantity / step infinite: a 500 from a backtest (schemathesis).
    response = send(api, "PATCH", f"/bots/{bot.pk}", '{"execution": {"qty_step": 5e-324}}')
    assert_invalid(response, "body.execution.qty_step")


def test_patch_refuses_an_explicit_null(api, bot):
    response = send(api, "PATCH", f"/bots/{bot.pk}", '{"params": null}')
    assert_invalid(response, "body.params")
    assert "null" in response.json()["detail"]


def test_a_bad_bot_config_is_422_with_its_fields(api, bot):
    response = send(api, "PATCH", f"/bots/{bot.pk}", '{"timeframe": "7x"}')
    assert response.status_code == 422 and response.json()["code"] == "invalid_input"
    assert fields(response) == ["body.timeframe"]
    response = send(api, "PATCH", f"/bots/{bot.pk}", '{"strategy": "rsi_mean_reversion"}')  # sma's params
    assert response.status_code == 422 and response.json()["code"] == "invalid_bot"
    assert all(f.startswith("params") for f in fields(response))


# --- backtests, halts, queries ---------------------------------------------------------------------

@pytest.mark.parametrize("body,field", [
    ({"start": "2023-01-01", "end": "2022-01-01"}, "body"),
    ({"starting_cash": 0}, "body.starting_cash"),
    ({"data_source": "csv"}, "body.data_source"),
    ({"seed": "abc"}, "body.seed"),
    ({"until": "2023-01-01"}, "body.until"),
])
def test_bad_backtest_input_is_422(api, bot, body, field):
    assert_invalid(send(api, "POST", f"/bots/{bot.pk}/backtests", json.dumps(body)), field)


def test_a_backtest_without_stored_bars_is_422(api, bot):
    response = send(api, "POST", f"/bots/{bot.pk}/backtests", '{"start": "1990-01-01", "end": "1990-12-31"}')
    assert response.status_code == 422 and response.json()["code"] == "no_bars"


@pytest.mark.parametrize("url", ["/bots/halt-all", "/paper/stop-all", "/kill-switch"])
def test_halt_bodies_are_checked(api, url):
    assert_invalid(send(api, "POST", url, '{"reason": "x", "force": true}'), "body.force")
    # A long reason does not stop a halt: it is cut to what the ledger holds (tests/test_kill_switch_input.py).
    fired = send(api, "POST", url, json.dumps({"reason": "x" * 301}))
    assert fired.status_code == 200 and len(fired.json()["reason"]) <= 200


@pytest.mark.parametrize("query,field", [
    ("limit=0", "query.limit"), ("limit=1001", "query.limit"), ("limit=ten", "query.limit"),
    ("offset=-1", "query.offset"), ("status=sleeping", "query.status"), ("bot_id=x", "query.bot_id"),
])
def test_bad_query_parameters_are_422(api, query, field):
    assert_invalid(api.get(f"/paper?{query}"), field)


def test_a_bad_after_seq_is_422(api):
    assert_invalid(api.get("/paper/x/frames?after_seq=-1"), "query.after_seq")


def test_a_long_request_id_is_cut_not_a_500(api, bot, sample_data):
    send(api, "POST", f"/bots/{bot.pk}/backtests", '{"start": "2022-01-01", "end": "2023-12-31"}')
    response = api.post(f"/bots/{bot.pk}/paper", data='{"starting_cash":100000,"duration_minutes":60}',
                        content_type="application/json", HTTP_X_REQUEST_ID="r" * 500)
    assert response.status_code == 201
    assert PaperTradingRun.objects.get().request_id == "r" * 100


def test_a_database_outage_is_a_503_with_a_reason_not_a_traceback(monkeypatch, client, django_user_model):
    from django.db import OperationalError

    from ledger import selectors
    from paper.tokens import api_token_create

    user = django_user_model.objects.create_user("dbdown")
    _, token = api_token_create(user=user)

    def down(**kwargs):
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(selectors, "runs_list", down)
    response = client.get("/paper", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 503
    assert response.json()["code"] == "database_unavailable" and "could not connect" in response.json()["detail"]


@pytest.mark.parametrize("query", [{"offset": 3842538275315760758784}, {"offset": -1}, {"limit": 0},
                                   {"after_seq": 10**30}])
def test_out_of_range_paging_is_a_422_not_a_500(client, django_user_model, query):
    from bots.services import bot_create
    from ledger.services import run_create
    from paper.tokens import api_token_create

    user = django_user_model.objects.create_user("pager")
    _, token = api_token_create(user=user)
    bot = bot_create(name="pg", strategy="buy_and_hold", symbols=["ETH-USD"])
    run = run_create(bot=bot, starting_cash=1, symbol="ETH-USD", timeframe="1d", data_source="synthetic", seed=0,
                     config_snapshot={}, config_hash="x")
    paths = [f"/paper/{run.id}/frames"] if "after_seq" in query else ["/paper", f"/paper/{run.id}/frames",
                                                                       f"/paper/{run.id}/fills"]
    for path in paths:
        response = client.get(path, query, HTTP_AUTHORIZATION=f"Bearer {token}")
        assert response.status_code == 422, (path, query, response.content)
