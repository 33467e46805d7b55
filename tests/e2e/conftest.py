"""Real processes: daphne (`manage.py serve`) and, in services mode, `rundramatiq` workers."""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import pytest

from bench.stack import PG_ADMIN, Stack, drop_pg_database, scratch_pg_database

# Services mode (real PostgreSQL and Redis on 127.0.0.1) runs only when asked for: CI's
# services pass sets it. Unset, those tests skip even if both answer (a developer's own
# PostgreSQL and Redis are not the tests' to use); set, a service that does not answer fails them.
SERVICES_ENV = "PAPERTRADE_TEST_SERVICES"
REDIS_URL = "redis://127.0.0.1:6379/0"  # the stacks' keys go under a prefix of their own


def services_enabled() -> bool:
    return os.environ.get(SERVICES_ENV, "").strip() not in ("", "0")


def services_down() -> str | None:
    """Why PostgreSQL or Redis on 127.0.0.1 does not answer, or None."""
    try:
        import psycopg

        psycopg.connect(PG_ADMIN, connect_timeout=2).close()
    except Exception as exc:  # noqa: BLE001
        return f"PostgreSQL on 127.0.0.1:5432 does not answer ({exc})"
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001
        return f"Redis on 127.0.0.1:6379 does not answer ({exc})"
    return None


def services_available() -> bool:
    """True when services-mode tests are to run. Without PAPERTRADE_TEST_SERVICES it skips the
    calling test (saying how to enable it); with it and a service down it fails the test."""
    if not services_enabled():
        pytest.skip(f"services mode is off: set {SERVICES_ENV}=1 (PostgreSQL and Redis on 127.0.0.1) to run it")
    why = services_down()
    if why:
        pytest.fail(f"{SERVICES_ENV} is set but {why}", pytrace=False)
    return True


def start_stack(mode: str, workdir, *, name: str) -> Stack:
    """A started stack in `mode`. Services mode gets a scratch PostgreSQL database of its own,
    `<name>_<pid>_<hex>`, and Redis keys under a unique prefix; stop() drops and deletes both."""
    kwargs: dict = {"mode": mode, "workdir": workdir}
    database = None
    if mode == "services":
        services_available()
        kwargs["database_url"] = scratch_pg_database(name)
        database = kwargs["database_url"].rsplit("/", 1)[1]
        kwargs["redis_url"] = REDIS_URL
    stack = Stack(**kwargs, processes=2, threads=8, embedded_threads=16)
    if database:
        stack.cleanups.append(lambda: drop_pg_database(database))
    return stack.start()


@pytest.fixture(scope="module", params=["embedded", "services"])
def stack(request, tmp_path_factory):
    stack = start_stack(request.param, tmp_path_factory.mktemp(f"stack-{request.param}"), name="papertrade_e2e")
    yield stack
    stack.stop()


class Api:
    """The seed's curl lines, with the token header added (urllib sends -d's Content-Type too)."""

    def __init__(self, stack: Stack):
        self.base = stack.url
        self.token = stack.token

    def call(self, method: str, path: str, body: str | dict | None = None, *, auth: bool = True):
        data = None
        if body is not None:
            data = (body if isinstance(body, str) else json.dumps(body)).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if auth:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")


@pytest.fixture(scope="module")
def api(stack):
    return Api(stack)
