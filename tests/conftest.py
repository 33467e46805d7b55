"""Shared fixtures: real sample data, a demo bot, and a bot with a fresh backtest."""
from __future__ import annotations

import os
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
def bot_owner():
    """Who owns demo_bot: nobody (a staff-only bot), unless a test module overrides this fixture."""
    return None


@pytest.fixture
def demo_bot(db, bot_owner):
    from bots.services import bot_create

    return bot_create(
        owner=bot_owner,
        name="demo",
        strategy="sma_crossover",
        params={"fast": 10, "slow": 30},
        symbols=["ETH-USD"],
        timeframe="1d",
        risk={"max_drawdown_pct": 80},
    )


def pytest_configure(config):
    """With REDIS_URL, this run's Redis keys and channels go under a prefix of its own (deleted at
    the end), so a shared Redis's other keys, and other runs' queues and stops, are not ours."""
    from django.conf import settings

    if not settings.REDIS_URL:
        return
    import dramatiq

    from bench.stack import new_redis_prefix

    prefix = f"{settings.REDIS_KEY_PREFIX}{new_redis_prefix()}"
    config._redis_key_prefix = prefix
    settings.REDIS_KEY_PREFIX = prefix
    os.environ["REDIS_KEY_PREFIX"] = prefix  # processes the tests start
    # Settings are loaded (and Django set up) before this conftest: repoint what they built.
    broker = dramatiq.get_broker()
    if hasattr(broker, "namespace"):
        broker.namespace = f"{prefix}dramatiq"
    layer_config = settings.CHANNEL_LAYERS["default"].get("CONFIG")
    if layer_config is not None:
        layer_config["prefix"] = f"{prefix}asgi"
        from channels.layers import channel_layers

        channel_layers.backends.clear()


def pytest_unconfigure(config):
    prefix = getattr(config, "_redis_key_prefix", None)
    if prefix:
        from django.conf import settings

        from bench.stack import delete_redis_prefix

        try:
            delete_redis_prefix(settings.REDIS_URL, prefix)
        except Exception:  # noqa: BLE001, S110 - Redis gone: nothing of ours to delete
            pass


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """On PostgreSQL this run's test database is `test_<NAME>_<pid>_<hex>`: pytest-django creates
    and drops its own, never a fixed `test_papertrade` another run (or a developer) is using."""
    from django.conf import settings

    from bench.stack import unique_name

    for db in settings.DATABASES.values():
        if db["ENGINE"] != "django.db.backends.sqlite3":
            db.setdefault("TEST", {})["NAME"] = unique_name(f"test_{db['NAME']}"[:40])


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
