"""The paper metadata gate: each refusal names the condition that failed."""
from __future__ import annotations

from datetime import date, timedelta

import pytest
from django.utils import timezone

from bots.models import BacktestRun
from bots.services import backtest_run, bot_update, paper_gate_check

pytestmark = pytest.mark.django_db


def fresh_backtest(bot):
    return backtest_run(bot=bot, start=date(2022, 1, 1), end=date(2023, 12, 31))


def test_it_passes_with_a_fresh_backtest_of_the_current_config(demo_bot, sample_data):
    run = fresh_backtest(demo_bot)
    decision = paper_gate_check(bot=demo_bot)
    assert run.sharpe not in (None, 0)
    assert (decision.ok, decision.condition, decision.backtest_id) == (True, "passed", run.pk)


def test_it_refuses_a_bot_without_backtest(demo_bot):
    decision = paper_gate_check(bot=demo_bot)
    assert (decision.ok, decision.condition) == (False, "no_backtest")
    assert "no backtest" in decision.message


def test_it_refuses_when_the_config_changed_since_the_backtest(demo_bot, sample_data):
    fresh_backtest(demo_bot)
    bot_update(bot=demo_bot, params={"fast": 12, "slow": 30})
    decision = paper_gate_check(bot=demo_bot)
    assert (decision.ok, decision.condition) == (False, "config_changed")
    assert "config hash" in decision.message


def test_a_rename_does_not_change_the_config_hash(demo_bot):
    before = demo_bot.config_hash
    bot_update(bot=demo_bot, name="renamed")
    assert demo_bot.config_hash == before


def test_it_refuses_a_backtest_older_than_the_limit(demo_bot, sample_data, settings):
    settings.PAPER_GATE_MAX_AGE_HOURS = 24
    run = fresh_backtest(demo_bot)
    later = timezone.now() + timedelta(hours=25)
    decision = paper_gate_check(bot=demo_bot, now=later)
    assert (decision.ok, decision.condition, decision.backtest_id) == (False, "backtest_too_old", run.pk)
    assert "limit is 24 h" in decision.message
    assert paper_gate_check(bot=demo_bot, now=timezone.now() + timedelta(hours=23)).ok


@pytest.mark.parametrize("sharpe", [0.0, None])
def test_it_refuses_a_zero_or_missing_sharpe(demo_bot, sample_data, sharpe):
    run = fresh_backtest(demo_bot)
    BacktestRun.objects.filter(pk=run.pk).update(sharpe=sharpe)
    decision = paper_gate_check(bot=demo_bot)
    assert (decision.ok, decision.condition) == (False, "zero_sharpe")


def test_only_the_latest_backtest_of_the_current_config_counts(demo_bot, sample_data):
    good = fresh_backtest(demo_bot)
    newer = fresh_backtest(demo_bot)
    BacktestRun.objects.filter(pk=newer.pk).update(sharpe=0.0)
    assert good.pk != newer.pk
    assert paper_gate_check(bot=demo_bot).condition == "zero_sharpe"
