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


def _index_columns(table: str) -> dict[str, tuple[str, ...]]:
    """Every index on `table` (unique constraints and the primary key included) by name: its columns."""
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    return {name: tuple(c["columns"]) for name, c in constraints.items()
            if (c["index"] or c["unique"] or c["primary_key"]) and c["columns"]}


@pytest.mark.parametrize("table", ["paper_trading_runs", "paper_orders", "paper_fills", "paper_equity_points",
                                   "paper_frames"])
def test_no_ledger_index_is_covered_by_another(table):
    """Every index costs each write of a row (a run writes orders, fills, an equity point and frames
    every bar): a single-column index that is the leading column of a wider one only costs. Django
    gives each foreign key one (two on PostgreSQL, with its _like twin) unless told not to."""
    indexes = _index_columns(table)
    covered = sorted(name for name, cols in indexes.items() if len(cols) == 1
                     and any(len(other) > 1 and other[0] == cols[0] for other in indexes.values()))
    assert covered == [], f"{table}: {covered} are covered by a wider index ({indexes})"
