"""How the API serves reads: the ASGI handler, the JSON encoder and PostgreSQL's timestamp loader.

Each is there for speed (docs/BENCHMARKS.md); these tests hold what must not change with it.
"""
import asyncio
import json
import threading
import warnings
from datetime import UTC, datetime

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.http import HttpRequest

from config.api import JsonRenderer
from paper.tokens import api_token_create

pytestmark = pytest.mark.django_db(transaction=True)


def asgi_get(app, path: str, token: str, events: list | None = None) -> tuple[int, dict | bytes]:
    """One GET through an ASGI app, as daphne sends it; `events` gets ("sent", thread) per message."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver"), (b"authorization", f"Bearer {token}".encode())],
             "client": ("127.0.0.1", 5000), "server": ("testserver", 80)}
    sent, received = [], []

    async def receive():
        if not received:
            received.append(1)
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # no disconnect

    async def send(message):
        sent.append(message)
        if events is not None:
            events.append(("sent", threading.get_ident()))

    asyncio.run(app(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body) if path.startswith("/paper") else body


def test_the_asgi_handler_runs_middleware_and_view_on_one_reused_thread(monkeypatch):
    from config import asgi
    from paper import api as paper_api

    _, token = api_token_create(user=User.objects.create_user("alice"))
    handler = asgi.SyncASGIHandler()
    seen = []
    real = paper_api.selectors.runs_list

    def spy(**kwargs):
        seen.append(threading.get_ident())
        return real(**kwargs)

    monkeypatch.setattr(paper_api.selectors, "runs_list", spy)
    first = asgi_get(handler, "/paper", token)
    second = asgi_get(handler, "/paper", token)
    assert first == second == (200, {"items": [], "count": 0})
    assert len(seen) == 2 and seen[0] == seen[1] != threading.get_ident(), "one request thread, reused"
    assert len(handler._idle) == 1
    # The middleware chain is the synchronous one: no async middleware in between.
    assert not asyncio.iscoroutinefunction(handler._middleware_chain)
    # A bad token is still refused through this handler.
    assert asgi_get(handler, "/paper", "pt_wrong")[0] == 401


def test_request_signals_and_view_run_in_one_hop_before_the_bytes_are_sent(monkeypatch):
    from django.core import signals

    from config import asgi
    from paper import api as paper_api

    _, token = api_token_create(user=User.objects.create_user("bob"))
    handler = asgi.SyncASGIHandler()
    events: list = []
    started = lambda **kw: events.append(("started", threading.get_ident()))  # noqa: E731
    finished = lambda **kw: events.append(("finished", threading.get_ident()))  # noqa: E731
    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    real = paper_api.selectors.runs_list
    monkeypatch.setattr(paper_api.selectors, "runs_list",
                        lambda **kw: events.append(("view", threading.get_ident())) or real(**kw))
    try:
        assert asgi_get(handler, "/paper", token, events)[0] == 200
        kinds = [kind for kind, _ in events]
        assert kinds[:3] == ["started", "view", "finished"] and set(kinds[3:]) == {"sent"}
        assert len({thread for kind, thread in events if kind != "sent"}) == 1, "one thread, one hop"
        assert events[0][1] != events[-1][1], "the bytes are sent from the event loop"

        # A static file is a synchronous stream: read in the same hop (no warning), all of it.
        events.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            status, body = asgi_get(handler, "/static/js/app.js", token, events)
        assert status == 200 and body == (settings.BASE_DIR / "static/js/app.js").read_bytes()
        kinds = [kind for kind, _ in events]
        assert kinds[:2] == ["started", "finished"] and set(kinds[2:]) == {"sent"}
    finally:
        signals.request_started.disconnect(started)
        signals.request_finished.disconnect(finished)


def test_the_json_encoder_keeps_microseconds_and_writes_no_nan():
    body = JsonRenderer().render(HttpRequest(), {"at": datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
                                                 "nan": float("nan"), "inf": float("inf"), "x": 0.1},
                                 response_status=200)
    assert json.loads(body) == {"at": "2026-01-02T03:04:05.123456Z", "nan": None, "inf": None, "x": 0.1}


@pytest.mark.skipif(connection.vendor != "postgresql", reason="psycopg's loaders are PostgreSQL's")
def test_postgresql_timestamps_are_read_by_the_c_loader_as_the_same_aware_utc_values():
    from config.postgres import UTC as LOADER_UTC

    connection.ensure_connection()
    stamp = datetime(2026, 11, 21, 15, 4, 5, 123456, tzinfo=UTC)
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::timestamptz, '2026-07-01 12:00:00+02'::timestamptz", [stamp])
        got, other_zone = cursor.fetchone()
    loader = connection.connection.adapters.get_loader(1184, 0)
    assert loader.__name__ == "UtcTimestamptzLoader" and loader.timezone is LOADER_UTC
    assert got == stamp and got.tzinfo is UTC
    assert other_zone == datetime(2026, 7, 1, 10, 0, tzinfo=UTC) and other_zone.tzinfo is UTC


def test_the_openapi_schema_is_built_once_and_handed_out_as_a_copy(client):
    from config.api import api

    first = api.get_openapi_schema()
    first["paths"].clear()  # a caller that changes its copy changes nothing for the next one
    again = api.get_openapi_schema()
    assert list(api.__dict__["_openapi_schemas"]) == ["/"], "built once, for the one path prefix"
    served = client.get("/openapi.json").json()
    assert again["paths"] and set(again["paths"]) == set(served["paths"])
    assert served["paths"]["/paper"]["get"]["responses"]["401"]["description"].startswith("not_authenticated")


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the pool is PostgreSQL's")
def test_the_pool_check_skips_the_round_trip_on_a_quiet_connection_and_catches_a_dropped_one(monkeypatch):
    import select
    import time

    import psycopg
    from psycopg_pool import ConnectionPool

    from config.postgres import pool_check

    db = connection.settings_dict
    params = {"dbname": db["NAME"], "user": db["USER"], "host": db["HOST"], "port": db["PORT"] or 5432}
    checks = []
    real = ConnectionPool.check_connection
    monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(lambda c: checks.append(1) or real(c)))
    with psycopg.connect(**params, autocommit=True) as conn, psycopg.connect(**params, autocommit=True) as admin:
        conn.execute("SELECT 1")
        pool_check(conn)
        assert checks == [], "a quiet idle connection is handed out without a query"

        admin.execute("SELECT pg_terminate_backend(%s)", [conn.info.backend_pid])
        deadline = time.monotonic() + 5
        while not select.select([conn.pgconn.socket], [], [], 0.05)[0] and time.monotonic() < deadline:
            pass
        with pytest.raises(psycopg.OperationalError):
            pool_check(conn)
        assert checks == [1], "the server's goodbye on the socket makes it check for real"

    # The pool Django builds uses it, and hands out working connections.
    assert connection.pool._check is pool_check
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
