"""PostgreSQL connections: timestamps read in C, and the pool's check without a round trip.

Timestamps.

Django reads every `timestamptz` through its own loader, a Python subclass of psycopg's
Python one (to pin the timezone): ~6.4 µs a value, against ~0.6 µs for psycopg's C loader
(psycopg[binary]) wrapped here. A page of 50 runs holds 200 timestamps, so this was ~1.2 ms
of every list request (bench/load.py). Used only where it changes nothing: the connection's
session time zone is UTC (Django sets it from DATABASES' TIME_ZONE, UTC here), so the C
loader's datetimes are already the aware UTC ones Django's would be.

The pool's check (`pool_check`). Django's CONN_HEALTH_CHECKS makes the pool run an empty query
on every connection it hands out: a round trip per request. A connection the server has
dropped (a restart, a terminated backend, an idle timeout) has its goodbye or EOF waiting on the
socket, so the socket is polled first (no round trip) and the query runs only when something is
there, or when the connection is not idle.
"""
from __future__ import annotations

import datetime
import select

UTC = datetime.UTC


def _fast_utc_loader():
    import psycopg
    from psycopg.adapt import Loader
    from psycopg.pq import Format

    native = psycopg.adapters.get_loader(psycopg.postgres.types["timestamptz"].oid, Format.TEXT)

    class UtcTimestamptzLoader(Loader):
        # Django's create_cursor compares this with the connection's timezone, and registers
        # its own loader again only if they differ.
        timezone = UTC

        def __init__(self, oid, context=None):
            super().__init__(oid, context)
            self._load = native(oid, context).load

        def load(self, data):
            value = self._load(data)
            return value if value.tzinfo is UTC else value.astimezone(UTC)

    return UtcTimestamptzLoader


def use_fast_timestamps(sender, connection, **kwargs) -> None:
    """connection_created receiver: read timestamptz with the C loader on UTC connections."""
    if connection.vendor != "postgresql" or connection.timezone_name != "UTC":
        return
    global _LOADER
    if _LOADER is None:
        _LOADER = _fast_utc_loader()
    connection.connection.adapters.register_loader("timestamptz", _LOADER)


_LOADER = None


def pool_check(conn) -> None:
    """psycopg_pool `check`: raise if `conn` is unusable; poll its socket, query only if needed."""
    from psycopg import OperationalError
    from psycopg.pq import ConnStatus, TransactionStatus
    from psycopg_pool import ConnectionPool

    if conn.closed or conn.broken or conn.pgconn.status != ConnStatus.OK:
        raise OperationalError("the pooled connection is closed")
    if conn.pgconn.transaction_status == TransactionStatus.IDLE:
        readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
        if not readable:
            return  # nothing from the server since the last answer: the connection is as it was
    ConnectionPool.check_connection(conn)
