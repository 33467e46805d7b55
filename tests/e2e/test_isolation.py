"""The test command is safe on a shared host: a run touches only the databases and Redis keys it
made, under names of its own, and services mode runs only when asked for.

The old helpers dropped fixed databases (papertrade_e2e, papertrade_browser) WITH (FORCE) and
flushed fixed Redis dbs (3 and 7): two runs at once collided, and a developer's own databases
by those names were lost. The services-mode case below puts sentinels exactly there.
"""
from __future__ import annotations

import os
import re
import time

import pytest

from bench.stack import (
    PG_ADMIN,
    DatabaseExists,
    Stack,
    create_pg_database,
    delete_redis_prefix,
    drop_pg_database,
    new_redis_prefix,
    pg_url,
    reset_pg_database,
    unique_name,
)
from tests.e2e import conftest as e2e
from tests.e2e.conftest import Api, services_available, start_stack

OLD_DATABASES = ["papertrade_e2e", "papertrade_browser"]  # the names the old helpers dropped
OLD_REDIS_DBS = [3, 7]  # the dbs they flushed
SESSION = {"starting_cash": 100_000, "duration_minutes": 60, "pace": 60}


# --- names, without any service -----------------------------------------------------------------

def test_two_calls_give_two_names_of_this_process():
    a, b = unique_name("papertrade_e2e"), unique_name("papertrade_e2e")
    assert a != b
    for name in (a, b):
        assert re.fullmatch(rf"papertrade_e2e_{os.getpid()}_[0-9a-f]{{8}}", name), name
    assert new_redis_prefix() != new_redis_prefix()


def test_each_services_stack_has_a_redis_prefix_of_its_own(tmp_path):
    one = Stack(mode="services", workdir=tmp_path / "one", redis_url="redis://127.0.0.1:6379/3")
    two = Stack(mode="services", workdir=tmp_path / "two", redis_url="redis://127.0.0.1:6379/3")
    prefixes = {one.env["REDIS_KEY_PREFIX"], two.env["REDIS_KEY_PREFIX"]}
    assert len(prefixes) == 2 and all(p.startswith(f"pt_{os.getpid()}_") for p in prefixes)
    assert one.owns_redis_prefix and two.owns_redis_prefix
    given = Stack(mode="services", workdir=tmp_path / "given", redis_prefix="mine:")
    assert given.env["REDIS_KEY_PREFIX"] == "mine:" and not given.owns_redis_prefix  # not its keys to delete
    assert "REDIS_KEY_PREFIX" not in Stack(mode="embedded", workdir=tmp_path / "embedded").env


def test_a_database_this_process_did_not_create_is_never_dropped():
    for name in [*OLD_DATABASES, "postgres", unique_name("papertrade_e2e")]:
        with pytest.raises(RuntimeError, match="did not create"):
            drop_pg_database(name)


@pytest.mark.parametrize("prefix", ["", "*", "pt_1?", "a[b]", "x y"])
def test_no_redis_prefix_that_could_match_others_keys(prefix):
    with pytest.raises(ValueError):
        delete_redis_prefix("redis://127.0.0.1:6379/0", prefix)


def test_services_mode_is_off_unless_asked_for(monkeypatch):
    monkeypatch.setattr(e2e, "services_down", lambda: None)  # as if both answered
    monkeypatch.delenv(e2e.SERVICES_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"set {e2e.SERVICES_ENV}=1"):
        services_available()
    monkeypatch.setenv(e2e.SERVICES_ENV, "0")
    with pytest.raises(pytest.skip.Exception):
        services_available()
    monkeypatch.setenv(e2e.SERVICES_ENV, "1")
    assert services_available() is True


def test_services_mode_asked_for_with_a_service_down_fails(monkeypatch):
    monkeypatch.setenv(e2e.SERVICES_ENV, "1")
    monkeypatch.setattr(e2e, "services_down", lambda: "Redis on 127.0.0.1:6379 does not answer")
    with pytest.raises(pytest.fail.Exception, match="is set but Redis"):
        services_available()


@pytest.mark.django_db
def test_this_runs_test_database_and_redis_keys_are_its_own():
    """On PostgreSQL, pytest-django's test database is this run's (not a fixed test_papertrade);
    with REDIS_URL, the in-process broker, channel layer and stop channel use this run's prefix."""
    from django.conf import settings
    from django.db import connection

    if connection.vendor != "postgresql" and not settings.REDIS_URL:
        pytest.skip("SQLite and no Redis: nothing shared (the SQLite test database is per process)")
    if connection.vendor == "postgresql":
        assert re.fullmatch(rf"test_\w+_{os.getpid()}_[0-9a-f]{{8}}", connection.settings_dict["NAME"])
    if settings.REDIS_URL:
        import dramatiq

        prefix = settings.REDIS_KEY_PREFIX
        assert re.search(rf"pt_{os.getpid()}_[0-9a-f]{{8}}:$", prefix), prefix
        assert dramatiq.get_broker().namespace == f"{prefix}dramatiq"
        assert settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] == f"{prefix}asgi"
        assert os.environ["REDIS_KEY_PREFIX"] == prefix


# --- a services-mode stack beside a sentinel database and sentinel keys --------------------------

def _databases() -> set[str]:
    import psycopg

    with psycopg.connect(PG_ADMIN) as conn:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}


def _prefix_keys(client, prefix: str) -> list[bytes]:
    return list(client.scan_iter(match=prefix + "*", count=1000))


@pytest.mark.e2e
def test_a_services_stack_leaves_other_databases_and_keys_alone(tmp_path):
    services_available()
    import psycopg
    import redis

    # Sentinels where the old code struck: its fixed databases, and keys in its Redis dbs (and in
    # db 0 under Dramatiq's default namespace, like a developer's own worker's queue).
    ours: list[str] = []  # sentinel databases this test created (a developer's are only looked at)
    for name in OLD_DATABASES:
        if name in _databases():
            continue
        create_pg_database(name)
        ours.append(name)
        with psycopg.connect(pg_url(name), autocommit=True) as conn:
            conn.execute("CREATE TABLE sentinel (v text)")
            conn.execute("INSERT INTO sentinel VALUES ('still here')")
    present = set(OLD_DATABASES)  # all exist now, ours or someone else's
    token = unique_name("sentinel")
    sentinels = {db: (redis.Redis(host="127.0.0.1", port=6379, db=db), f"papertrade-sentinel:{token}")
                 for db in [*OLD_REDIS_DBS, 0]}
    for client, key in sentinels.values():
        client.set(key, "still here", ex=600)
    foreign = f"dramatiq:sentinel-{token}"  # the default namespace, unprefixed
    sentinels[0][0].set(foreign, "still here", ex=600)
    try:
        before = _databases()
        stack = start_stack("services", tmp_path / "stack", name="papertrade_e2e")
        try:
            database = stack.env["DATABASE_URL"].rsplit("/", 1)[1]
            prefix = stack.env["REDIS_KEY_PREFIX"]
            assert re.fullmatch(rf"papertrade_e2e_{os.getpid()}_[0-9a-f]{{8}}", database)
            assert database not in before and database in _databases()
            stack_redis = redis.Redis.from_url(stack.env["REDIS_URL"])
            # A session leaves queue, ack and heartbeat keys behind, all under the stack's prefix.
            status, started = Api(stack).call("POST", f"/bots/{stack.demo_bot_id}/paper", SESSION)
            assert status == 201, started
            deadline = time.time() + 30
            while not _prefix_keys(stack_redis, prefix) and time.time() < deadline:
                time.sleep(0.2)
            assert _prefix_keys(stack_redis, prefix), "the stack's keys are under its prefix"
            # A database of that name that is not ours is refused, not dropped or taken over.
            with pytest.raises(DatabaseExists):
                create_pg_database("papertrade_e2e")
            with pytest.raises(DatabaseExists, match="not dropping"):
                reset_pg_database("papertrade_e2e")
        finally:
            stack.stop()

        after = _databases()
        assert database not in after, "the stack drops the database it made"
        assert present <= after, "the old fixed-name databases survive"
        mine = {d for d in after - before if f"_{os.getpid()}_" in d}  # other runs may be creating theirs
        assert mine == set(), f"left behind: {mine}"
        for name in ours:
            with psycopg.connect(pg_url(name)) as conn:
                assert conn.execute("SELECT v FROM sentinel").fetchall() == [("still here",)]
        for client, key in sentinels.values():
            assert client.get(key) == b"still here"
        assert sentinels[0][0].get(foreign) == b"still here"
        assert _prefix_keys(stack_redis, prefix) == [], "the stack deletes its own keys"
    finally:
        for client, key in sentinels.values():
            client.delete(key)
        sentinels[0][0].delete(foreign)
        for name in ours:
            drop_pg_database(name)
