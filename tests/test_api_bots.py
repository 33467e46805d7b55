"""The bots API: the walkthrough's steps 1 and 2 verbatim, CRUD, backtests, the gate and halt-all.

Sessions started here stay queued: on_commit (the enqueue) does not run inside a test transaction.
"""
import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from bots.models import BacktestRun, Bot
from ledger.models import PaperTradingRun
from paper.tokens import api_token_create

pytestmark = pytest.mark.django_db

SEED_BODY = '{"starting_cash":100000,"duration_minutes":60}'  # walkthrough step 2, character for character
BOT = {
    "name": "walkthrough",
    "strategy": "sma_crossover",
    "params": {"fast": 3, "slow": 8},
    "symbols": ["ETH-USD"],
    "timeframe": "1d",
    "risk": {"max_drawdown_pct": 90},
}
WINDOW = {"start": "2022-01-01", "end": "2023-12-31"}


@pytest.fixture
def api(client):
    user = User.objects.create_user("alice", password="pw")
    _, token = api_token_create(user=user)
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def post(api, url, body=None, **extra):
    data = "" if body is None else json.dumps(body)
    return api.post(url, data=data, content_type="application/json", **extra)


@pytest.fixture
def bot_id(api):
    response = post(api, "/bots", BOT)
    assert response.status_code == 201, response.json()
    return response.json()["id"]


@pytest.fixture
def ready_bot_id(api, bot_id, sample_data):
    response = post(api, f"/bots/{bot_id}/backtests", WINDOW)
    assert response.status_code == 201, response.json()
    return bot_id


def seed_step_2(api, bot_id, **extra):
    # curl -X POST .../bots/<bot_id>/paper -d '...': curl's -d says form-urlencoded.
    return api.post(f"/bots/{bot_id}/paper", data=SEED_BODY, content_type="application/x-www-form-urlencoded", **extra)


# --- the walkthrough -----------------------------------------------------------------------------

def test_step_1_shows_recent_backtest_references_newest_first_and_a_non_zero_sharpe(api, ready_bot_id):
    second = post(api, f"/bots/{ready_bot_id}/backtests", {"start": "2021-01-01", "end": "2023-12-31"}).json()
    response = api.get(f"/bots/{ready_bot_id}")
    assert response.status_code == 200
    bot = response.json()
    refs = bot["backtest_runs"]
    assert [r["id"] for r in refs] == sorted((r["id"] for r in refs), reverse=True) and refs[0]["id"] == second["id"]
    assert set(refs[0]) == {"id", "created_at", "sharpe", "config_hash", "total_return", "num_bars", "data_source"}
    assert refs[0]["config_hash"] == bot["config_hash"] and refs[0]["num_bars"] > 0
    assert bot["sharpe"] == refs[0]["sharpe"] and bot["sharpe"] not in (None, 0)
    assert bot["gate"] == {"ok": True, "condition": "passed", "message": bot["gate"]["message"], "backtest_id": second["id"]}


def test_step_1_lists_at_most_20_backtest_references(api, bot_id):
    bot = Bot.objects.get(pk=bot_id)
    BacktestRun.objects.bulk_create([
        BacktestRun(bot=bot, config_hash=bot.config_hash, config_snapshot={}, symbol="ETH-USD", timeframe="1d",
                    data_source="stored", starting_cash=1, status="completed", sharpe=float(i))
        for i in range(25)
    ])
    refs = api.get(f"/bots/{bot_id}").json()["backtest_runs"]
    assert len(refs) == 20 and refs[0]["sharpe"] == 24.0


def test_step_1_sharpe_is_the_newest_backtest_of_any_config(api, ready_bot_id):
    response = api.patch(f"/bots/{ready_bot_id}", data={"params": {"fast": 4, "slow": 8}}, content_type="application/json")
    bot = response.json()
    assert response.status_code == 200 and bot["backtest_runs"][0]["config_hash"] != bot["config_hash"]
    assert bot["sharpe"] == bot["backtest_runs"][0]["sharpe"] != 0
    assert bot["gate"]["condition"] == "config_changed"


def test_step_2_without_content_type_starts_a_session(api, ready_bot_id):
    response = seed_step_2(api, ready_bot_id, HTTP_X_REQUEST_ID="req-42")
    assert response.status_code == 201, response.json()
    body = response.json()
    run = PaperTradingRun.objects.get(pk=body["paper_run_id"])
    assert body == {"paper_run_id": run.id, "status": "queued", "ws": f"/ws/paper/{run.id}"}
    assert run.bot_id == ready_bot_id and run.starting_cash == 100_000 and run.duration_minutes == 60
    assert run.request_id == "req-42" and run.data_source == "synthetic"


def test_step_2_takes_the_optional_session_fields(api, ready_bot_id):
    body = {"starting_cash": 5000, "duration_minutes": 3, "symbol": "ETH-USD", "pace": 10, "data_source": "stored",
            "seed": 7, "start": "2023-03-01", "warmup_bars": 5}
    response = post(api, f"/bots/{ready_bot_id}/paper", body)
    assert response.status_code == 201, response.json()
    run = PaperTradingRun.objects.get(pk=response.json()["paper_run_id"])
    assert (run.seed, run.pace, run.data_source, run.config_snapshot["session"]["warmup_bars"]) == (7, 10.0, "stored", 5)


# --- the gate, the kill switch -------------------------------------------------------------------

def test_the_gate_refuses_a_bot_without_backtest(api, bot_id):
    response = seed_step_2(api, bot_id)
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "gate_refused" and body["errors"]["condition"] == "no_backtest"
    assert "no backtest" in body["detail"]
    assert not PaperTradingRun.objects.exists()


def test_the_gate_refuses_a_bot_changed_since_its_backtest(api, ready_bot_id):
    assert api.patch(f"/bots/{ready_bot_id}", data={"params": {"fast": 4, "slow": 8}},
                     content_type="application/json").status_code == 200
    response = seed_step_2(api, ready_bot_id)
    assert response.status_code == 409 and response.json()["errors"]["condition"] == "config_changed"


def test_the_gate_refuses_an_old_backtest(api, ready_bot_id, settings):
    settings.PAPER_GATE_MAX_AGE_HOURS = 24
    BacktestRun.objects.filter(bot_id=ready_bot_id).update(created_at=timezone.now() - timedelta(hours=25))
    response = seed_step_2(api, ready_bot_id)
    assert response.status_code == 409 and response.json()["errors"]["condition"] == "backtest_too_old"


def test_the_gate_refuses_a_zero_sharpe(api, ready_bot_id):
    BacktestRun.objects.filter(bot_id=ready_bot_id).update(sharpe=0.0)
    response = seed_step_2(api, ready_bot_id)
    body = response.json()
    assert response.status_code == 409 and body["errors"]["condition"] == "zero_sharpe"
    assert body["errors"]["backtest_id"] == BacktestRun.objects.get(bot_id=ready_bot_id).pk


def test_a_latched_kill_switch_refuses_sessions_with_423_until_rearmed(api, ready_bot_id):
    assert post(api, "/kill-switch", {"reason": "drill"}).status_code == 200
    response = seed_step_2(api, ready_bot_id)
    assert response.status_code == 423
    assert response.json()["code"] == "kill_switch_latched" and "drill" in response.json()["detail"]
    User.objects.filter(username="alice").update(is_staff=True)  # re-arming needs staff
    assert post(api, "/kill-switch/rearm").json()["latched"] is False
    assert seed_step_2(api, ready_bot_id).status_code == 201


def test_halt_all_stops_every_bots_sessions_and_latches(api, ready_bot_id):
    run_id = seed_step_2(api, ready_bot_id).json()["paper_run_id"]
    response = post(api, "/bots/halt-all")
    assert response.status_code == 200
    report = response.json()
    assert report["scope"] == "bots" and report["latched"] is True and report["elapsed_ms"] >= 0
    assert report["reason"] == "kill_switch: halt-all by alice"
    [paper] = report["subsystems"]  # a bot trades only through its sessions: they are what is stopped
    assert paper["subsystem"] == "paper" and paper["stopped"] == [run_id] and report["stopped"] == 1
    assert f"bots {ready_bot_id}" in paper["detail"]
    assert PaperTradingRun.objects.get(pk=run_id).status == "aborted"
    assert seed_step_2(api, ready_bot_id).status_code == 423


def test_halt_all_is_not_taken_for_a_bot_id(api, bot_id):
    assert api.get("/bots/halt-all").status_code == 405
    assert api.delete("/bots/halt-all").status_code == 405
    assert Bot.objects.filter(pk=bot_id).exists()


# --- CRUD ----------------------------------------------------------------------------------------

def test_create_returns_the_bot_with_its_hash_and_gate(api):
    response = post(api, "/bots", BOT)
    assert response.status_code == 201
    bot = response.json()
    assert bot["name"] == "walkthrough" and bot["params"]["fast"] == 3 and len(bot["config_hash"]) == 64
    assert bot["backtest_runs"] == [] and bot["sharpe"] is None and bot["gate"]["condition"] == "no_backtest"


def test_an_invalid_bot_is_refused_with_the_fields_named(api):
    response = post(api, "/bots", {**BOT, "strategy": "no_such_strategy", "timeframe": "7x"})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_input"
    assert {e["field"] for e in body["errors"]} == {"body.strategy", "body.timeframe"}
    assert "sma_crossover" in body["detail"] and "'1d'" in body["detail"]
    assert not Bot.objects.exists()


def test_a_bot_config_that_breaks_a_rule_is_422_naming_the_field(api):
    response = post(api, "/bots", {**BOT, "params": {"fast": 8, "slow": 3}})
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_bot" and response.json()["errors"][0]["field"].startswith("params")


def test_a_duplicate_name_is_refused(api, bot_id):
    response = post(api, "/bots", BOT)
    assert response.status_code == 409 and response.json()["code"] == "bot_name_taken"
    assert response.json()["errors"][0]["field"] == "name"
    other = post(api, "/bots", {**BOT, "name": "other"}).json()
    assert api.patch(f"/bots/{other['id']}", data={"name": BOT["name"]},
                     content_type="application/json").status_code == 409
    assert api.patch(f"/bots/{bot_id}", data={"name": BOT["name"]}, content_type="application/json").status_code == 200


def test_list_is_paginated(api):
    for i in range(3):
        post(api, "/bots", {**BOT, "name": f"bot-{i}"})
    page = api.get("/bots?limit=2&offset=1").json()
    assert page["count"] == 3 and [b["name"] for b in page["items"]] == ["bot-1", "bot-2"]


def test_put_replaces_and_patch_changes_only_what_it_names(api, bot_id):
    replaced = api.put(f"/bots/{bot_id}", data={**BOT, "name": "renamed", "params": {"fast": 5, "slow": 20}},
                       content_type="application/json")
    assert replaced.status_code == 200 and replaced.json()["params"]["fast"] == 5
    patched = api.patch(f"/bots/{bot_id}", data={"timeframe": "1h"}, content_type="application/json").json()
    assert (patched["name"], patched["timeframe"], patched["params"]["slow"]) == ("renamed", "1h", 20)
    assert patched["config_hash"] != replaced.json()["config_hash"]


def test_an_invalid_update_changes_nothing(api, bot_id):
    response = api.patch(f"/bots/{bot_id}", data={"params": {"fast": 50, "slow": 10}}, content_type="application/json")
    assert response.status_code == 422 and response.json()["code"] == "invalid_bot"
    assert Bot.objects.get(pk=bot_id).params["fast"] == 3


def test_delete_removes_a_bot_without_paper_runs(api, ready_bot_id):
    response = api.delete(f"/bots/{ready_bot_id}")
    assert response.status_code == 204 and response.content == b""
    assert not Bot.objects.exists() and not BacktestRun.objects.exists()


def test_delete_refuses_a_bot_with_paper_runs(api, ready_bot_id):
    seed_step_2(api, ready_bot_id)
    response = api.delete(f"/bots/{ready_bot_id}")
    assert response.status_code == 409
    assert response.json()["code"] == "bot_has_paper_runs" and "paper runs" in response.json()["detail"]
    assert Bot.objects.filter(pk=ready_bot_id).exists()


# --- backtests -----------------------------------------------------------------------------------

def test_a_backtest_returns_its_metrics(api, bot_id, sample_data):
    response = post(api, f"/bots/{bot_id}/backtests", {**WINDOW, "starting_cash": 50_000, "symbol": "ETH-USD"})
    assert response.status_code == 201
    run = response.json()
    assert run["bot_id"] == bot_id and run["starting_cash"] == 50_000 and run["num_bars"] == 730
    assert run["metrics"]["sharpe"] == run["sharpe"] and run["status"] == "completed"
    assert "trades" not in run and "equity" not in run


def test_a_backtest_needs_no_body(api, bot_id, sample_data):
    response = post(api, f"/bots/{bot_id}/backtests")
    assert response.status_code == 201 and response.json()["data_source"] == "stored"


def test_a_synthetic_backtest_is_labelled_synthetic(api, bot_id):
    body = {"data_source": "synthetic", "seed": 3, "start": "2024-01-01", "end": "2024-06-30"}
    run = post(api, f"/bots/{bot_id}/backtests", body).json()
    assert run["data_source"] == "synthetic" and run["metrics"]["data_label"].endswith("(synthetic)")


def test_backtests_are_listed_newest_first_and_paginated(api, ready_bot_id):
    post(api, f"/bots/{ready_bot_id}/backtests", {"data_source": "synthetic"})
    page = api.get(f"/bots/{ready_bot_id}/backtests?limit=1").json()
    assert page["count"] == 2 and len(page["items"]) == 1 and page["items"][0]["data_source"] == "synthetic"
