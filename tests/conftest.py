"""Shared fixtures: real sample data, a demo bot, and a bot with a fresh backtest."""
from __future__ import annotations

from pathlib import Path

import pytest

import paper
from paper.engine.csvbars import parse_bars_csv

SAMPLE = Path(paper.__file__).parent / "sample_data"


@pytest.fixture(scope="session")
def eth_bars():
    """Real ETH-USD daily bars, parsed straight from the shipped CSV (no DB)."""
    return parse_bars_csv(SAMPLE / "ETH-USD-1d.csv", symbol="ETH-USD", timeframe="1d")


@pytest.fixture
def sample_data(db):
    from paper.services import sample_data_load

    return sample_data_load()


@pytest.fixture
def demo_bot(db):
    from bots.services import bot_create

    return bot_create(
        name="demo",
        strategy="sma_crossover",
        params={"fast": 10, "slow": 30},
        symbols=["ETH-USD"],
        timeframe="1d",
        risk={"max_drawdown_pct": 80},
    )


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """Close psycopg's pool before the test database is dropped (its idle connections would
    keep PostgreSQL from dropping it)."""
    yield
    from django.db import connections

    with django_db_blocker.unblock():
        for conn in connections.all():
            if conn.vendor == "postgresql":
                # A test thread that died holding a pooled connection would block the drop.
                with conn.cursor() as cursor:
                    cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                   "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            close_pool = getattr(conn, "close_pool", None)
            if close_pool is not None:
                close_pool()


@pytest.fixture(autouse=True)
def _outputs_in_tmp(settings, tmp_path):
    """Artifacts of every test go to its own temporary folder, never into the repository."""
    settings.OUTPUTS_DIR = tmp_path / "outputs"
    settings.PAPER_ARTIFACTS_DELAY_MS = 0  # inline; tests/test_actors.py covers the delayed actor
    # No background reconciler thread in workers that tests start; tests call sessions_reconcile().
    settings.PAPER_RECONCILE_SECONDS = 0
    # tests/custom_strategy_example.py holds the custom strategies the tests load by path.
    settings.PAPER_STRATEGY_PACKAGES = ["strategies", "tests"]


@pytest.fixture
def stub_broker():
    """Dramatiq's StubBroker behind the paper actors (a real broker, in memory), restored after."""
    from dramatiq.brokers.stub import StubBroker

    from paper.actors import run_paper_session, write_session_artifacts

    broker = StubBroker()
    broker.emit_after("process_boot")
    actors = (run_paper_session, write_session_artifacts)
    previous = [a.broker for a in actors]
    for actor in actors:
        actor.broker = broker
        broker.declare_actor(actor)
    yield broker
    for actor, old in zip(actors, previous, strict=True):
        actor.broker = old
    broker.flush_all()
