"""The walkthrough's two SQL statements, verbatim, against a persisted run (SQLite and PostgreSQL)."""
from __future__ import annotations

import pytest
from django.db import connection

from bots.services import bot_create
from ledger.models import PaperFill, PaperTradingRun
from ledger.services import run_create, run_persist
from tests.seed_sql import SEED_FILLS_SQL, SEED_RUNS_SQL

pytestmark = pytest.mark.django_db



@pytest.fixture
def persisted_run(eth_bars):
    bot = bot_create(name="sql", strategy="sma_crossover", params={"fast": 10, "slow": 30},
                     symbols=["ETH-USD"], timeframe="1d")
    config = bot.trading_config()
    result = config.build_engine(starting_cash=100_000, seed=0).run(eth_bars.slice(0, 500))
    run = run_create(bot=bot, starting_cash=100_000, symbol="ETH-USD", timeframe="1d", data_source="stored",
                     seed=0, config_snapshot=config.canonical(), config_hash=config.config_hash)
    run_persist(run=run, result=result, status="success", status_reason="completed")
    return run, result


def test_the_seed_sql_returns_the_run_and_its_fills(persisted_run):
    run, result = persisted_run
    with connection.cursor() as cursor:
        cursor.execute(SEED_RUNS_SQL)
        rows = cursor.fetchall()
        assert len(rows) == 1
        run_id, bot_id, status, total_pnl, num_fills, started_at, ended_at = rows[0]
        assert run_id == run.id and "-" in run_id  # the readable id, not 32 bare hex characters
        assert bot_id == run.bot_id and status == "success"
        assert total_pnl is not None and total_pnl == pytest.approx(result.total_pnl)
        assert num_fills == result.num_fills > 0
        assert started_at is not None and ended_at is not None

        cursor.execute(SEED_FILLS_SQL.replace("<from_above>", run_id))
        fills = cursor.fetchall()
    assert len(fills) == num_fills
    expected = [(f.client_order_id, f.symbol, str(f.side), f.qty, f.price) for f in result.fills]
    assert [tuple(r[:5]) for r in fills] == expected
    times = [r[5] for r in fills]
    assert times == sorted(times)


def test_the_newest_run_comes_first(persisted_run):
    run, _ = persisted_run
    older = PaperTradingRun.objects.create(bot=run.bot, starting_cash=1, symbol="ETH-USD", timeframe="1d",
                                           config_hash="x", started_at=run.started_at.replace(year=2000))
    with connection.cursor() as cursor:
        cursor.execute(SEED_RUNS_SQL)
        assert cursor.fetchone()[0] == run.id != older.id


def test_a_fill_cannot_be_recorded_twice(persisted_run):
    from django.db import IntegrityError, transaction

    run, result = persisted_run
    f = PaperFill.objects.filter(paper_run=run).first()
    with pytest.raises(IntegrityError), transaction.atomic():
        PaperFill.objects.create(paper_run=run, fill_id=f.fill_id, order_id="x", symbol="ETH-USD", side="buy",
                                 qty=1, price=1, fee=0, liquidity="taker", bar_index=0, filled_at=f.filled_at)
    run_persist(run=run, result=result, status="success", status_reason="completed")
    assert PaperFill.objects.filter(paper_run=run).count() == result.num_fills
