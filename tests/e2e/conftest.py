"""Real processes: daphne (`manage.py serve`) and, in services mode, `rundramatiq` workers."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from bench.stack import Stack, flush_redis, recreate_pg_database


def services_available() -> bool:
    try:
        import psycopg
        import redis

        psycopg.connect("postgres://postgres@127.0.0.1:5432/postgres", connect_timeout=2).close()
        redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_timeout=2).ping()
        return True
    except Exception:
        return False


def start_stack(mode: str, workdir, *, database: str, redis_db: int) -> Stack:
    """A started stack in `mode`; services mode gets a fresh PostgreSQL database and Redis db."""
    kwargs: dict = {"mode": mode, "workdir": workdir}
    if mode == "services":
        if not services_available():
            pytest.skip("PostgreSQL and Redis on 127.0.0.1 are needed for services mode")
        kwargs["database_url"] = recreate_pg_database(database)
        kwargs["redis_url"] = f"redis://127.0.0.1:6379/{redis_db}"
        flush_redis(kwargs["redis_url"])
    return Stack(**kwargs, processes=2, threads=8, embedded_threads=16).start()


@pytest.fixture(scope="module", params=["embedded", "services"])
def stack(request, tmp_path_factory):
    stack = start_stack(request.param, tmp_path_factory.mktemp(f"stack-{request.param}"),
                        database="papertrade_e2e", redis_db=3)
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
