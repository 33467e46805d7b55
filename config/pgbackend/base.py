"""Django's PostgreSQL backend, with the pool checking connections by `config.postgres.pool_check`.

Django builds the pool itself and passes `check=` only as CONN_HEALTH_CHECKS says: an empty
query for every connection handed out, or no check at all. This backend gives the pool ours
(no round trip unless the server has said something). psycopg_pool keeps its check in
`_check`; tests/test_api_serving.py fails if that changes.
"""
from django.db.backends.postgresql import base

from config.postgres import pool_check


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self):
        pool = super().pool
        if pool is not None and pool._check is not pool_check:
            pool._check = pool_check
        return pool
