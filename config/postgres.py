"""PostgreSQL connections read timestamps in C, not in Python.

Django reads every `timestamptz` through its own loader, a Python subclass of psycopg's
Python one (to pin the timezone): ~6.4 µs a value, against ~0.6 µs for psycopg's C loader
(psycopg[binary]) wrapped here. A page of 50 runs holds 200 timestamps, so this was ~1.2 ms
of every list request (bench/load.py). Used only where it changes nothing: the connection's
session time zone is UTC (Django sets it from DATABASES' TIME_ZONE, UTC here), so the C
loader's datetimes are already the aware UTC ones Django's would be.
"""
from __future__ import annotations

import datetime

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
