"""The store: PostgreSQL (or TimescaleDB) through psycopg 3.

Schema and migrations (``sql/``), the connection pool, the writers on the ingest
path and the queries the API reads with. Everything else talks to PostgreSQL
through this package, and sees only its exceptions (:mod:`.errors`).
"""

from tierscope.store.database import Database, redact
from tierscope.store.errors import Conflict, NotFound, StoreError, StoreUnavailable

__all__ = ("Conflict", "Database", "NotFound", "StoreError", "StoreUnavailable", "redact")
