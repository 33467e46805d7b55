"""Bots: validated on save, a config hash over what trades, and backtests through the engine."""
from __future__ import annotations

import io
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from bots.models import BacktestRun, Bot
from bots.services import backtest_run, bot_create
from config.errors import AppError

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parent.parent

GOOD = dict(name="b1", strategy="sma_crossover", params={"fast": 5, "slow": 20}, symbols=["ETH-USD"], timeframe="1d")


@pytest.mark.parametrize("change,field", [
    ({"strategy": "nope"}, "strategy"),
    ({"params": {"fast": 30, "slow": 20}}, "params"),
    ({"params": {"fast": "x"}}, "params"),
    ({"params": {"bogus": 1}}, "params"),
    ({"symbols": []}, "symbols"),
    ({"symbols": ["eth usd"]}, "symbols"),
    ({"timeframe": "2d"}, "timeframe"),
    ({"risk": {"max_drawdown_pct": 0}}, "risk"),
    ({"risk": {"unknown_limit": 1}}, "risk"),
    ({"execution": {"taker_fee_bps": -1}}, "execution"),
])
def test_an_invalid_bot_is_refused_and_not_saved(change, field):
    with pytest.raises(AppError) as exc:
        bot_create(**{**GOOD, **change})
    assert exc.value.code == "invalid_bot"
    assert any(d["field"] == field for d in exc.value.details)
    assert Bot.objects.count() == 0


def test_the_config_hash_covers_what_trades_and_nothing_else():
    a = bot_create(**GOOD)
    b = bot_create(**{**GOOD, "name": "b2"})
    c = bot_create(**{**GOOD, "name": "b3", "risk": {"max_drawdown_pct": 10}})
    d = bot_create(**{**GOOD, "name": "b4", "params": {"fast": 5, "slow": 20, "exposure": 1.0}})
    assert a.config_hash == b.config_hash == d.config_hash  # defaults filled in: same config
    assert a.config_hash != c.config_hash
    assert len(a.config_hash) == 64


def test_a_backtest_stores_metrics_trades_and_equity(sample_data):
    bot = bot_create(**GOOD)
    run = backtest_run(bot=bot, start=date(2022, 1, 1), end=date(2023, 12, 31))
    assert run.num_bars == 730
    assert (run.start.date(), run.end.date()) == (date(2022, 1, 1), date(2023, 12, 31))
    assert run.sharpe == run.metrics["sharpe"] and run.sharpe is not None
    assert run.num_fills == len(run.trades) > 0
    assert len(run.equity) == 730 and run.equity[-1][1] == pytest.approx(run.metrics["final_equity"])
    assert run.config_hash == bot.config_hash


def test_a_synthetic_backtest_is_labelled_synthetic():
    bot = bot_create(**{**GOOD, "timeframe": "1h"})
    run = backtest_run(bot=bot, data_source="synthetic", synthetic_count=500, seed=4)
    assert run.data_source == "synthetic" and "synthetic" in run.metrics["data_label"]
    assert run.num_bars == 500


def test_a_backtest_without_bars_is_a_clear_error():
    bot = bot_create(**GOOD)
    with pytest.raises(AppError) as exc:
        backtest_run(bot=bot, start=date(2022, 1, 1), end=date(2022, 2, 1))
    assert exc.value.code == "no_bars" and "ETH-USD" in exc.value.message
    assert BacktestRun.objects.count() == 0


def test_the_backtest_command_prints_metrics(sample_data):
    bot_create(**GOOD)
    out = io.StringIO()
    call_command("backtest", "b1", "--start", "2022-01-01", "--end", "2023-12-31", stdout=out)
    text = out.getvalue()
    assert "sharpe" in text and "max drawdown" in text and "bars 730" in text


def test_the_backtest_command_refuses_an_unknown_bot_with_exit_2():
    with pytest.raises(CommandError) as exc:
        call_command("backtest", "ghost")
    assert exc.value.returncode == 2 and "ghost" in str(exc.value)


def test_the_demo_command_runs_the_quick_start_backtest(tmp_path):
    """The README's main job, as a real process on a fresh SQLite file."""
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": f"sqlite:///{tmp_path / 'demo.sqlite3'}"}
    proc = subprocess.run([sys.executable, "manage.py", "demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ETH-USD 1d" in proc.stdout and "2022-01-01 .. 2023-12-31" in proc.stdout
    assert "sharpe" in proc.stdout
