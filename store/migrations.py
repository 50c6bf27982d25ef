"""Versioned schema migrations, applied at start-up and by ``tierscope db migrate``.

Migrations are the files ``sql/migrations/NNNN_name.sql``, applied in order, each
in its own transaction together with its row in ``schema_migrations``. A file
``NNNN_name.timescale.sql`` replaces its plain twin when the TimescaleDB
extension is available, which keeps the Timescale DDL small and separate.
An advisory lock lets several collectors start at once against one store.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import LiteralString, cast

import psycopg
from psycopg import AsyncConnection

from tierscope.store.errors import wrap_errors

_logger = logging.getLogger(__name__)
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x7469657273636F70  # "tiersco p", any constant shared by all collectors

_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE schema_migrations IS 'Migrations applied to this store (store/migrations.py).';
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str
    timescale_sql: str | None = None


def available() -> list[Migration]:
    """All migrations shipped with this version, oldest first."""
    folder = resources.files("tierscope.store").joinpath("sql/migrations")
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if not match:
            continue
        version, name = int(match.group(1)), match.group(2)
        if version in found:
            raise RuntimeError(f"two migrations share version {version:04d}")
        timescale = folder.joinpath(entry.name.removesuffix(".sql") + ".timescale.sql")
        found[version] = Migration(
            version=version,
            name=name,
            sql=entry.read_text(),
            timescale_sql=timescale.read_text() if timescale.is_file() else None,
        )
    return [found[v] for v in sorted(found)]


async def timescale_available(conn: AsyncConnection) -> bool:
    cur = await conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    return await cur.fetchone() is not None


async def timescale_installed(conn: AsyncConnection) -> bool:
    cur = await conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
    return await cur.fetchone() is not None


@wrap_errors
async def applied_versions(conn: AsyncConnection) -> set[int]:
    cur = await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    row = await cur.fetchone()
    if not row or not row[0]:
        return set()
    cur = await conn.execute("SELECT version FROM schema_migrations")
    return {version for (version,) in await cur.fetchall()}


@wrap_errors
async def migrate(
    conn: AsyncConnection,
    *,
    on_apply: Callable[[Migration], None] | None = None,
) -> list[Migration]:
    """Apply the pending migrations; return those applied (none when up to date).

    ``conn`` must be in autocommit mode; each migration gets its own transaction.
    """
    await conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    try:
        await conn.execute(cast(LiteralString, _CREATE_LEDGER))
        done = await applied_versions(conn)
        pending = [m for m in available() if m.version not in done]
        # A new store uses TimescaleDB when it can; an existing one keeps the
        # choice it was created with.
        if done:
            use_timescale = await timescale_installed(conn)
        else:
            use_timescale = bool(pending) and await timescale_available(conn)
        if use_timescale and not await timescale_installed(conn):
            try:
                async with conn.transaction():
                    await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            except psycopg.Error as exc:
                # Listed but not loadable (e.g. not in shared_preload_libraries):
                # plain PostgreSQL works; say why TimescaleDB is not used.
                _logger.warning(
                    "TimescaleDB is available but cannot be enabled (%s); using plain tables",
                    str(exc).strip().splitlines()[0],
                )
                use_timescale = False
        for migration in pending:
            sql = migration.sql
            if use_timescale and migration.timescale_sql is not None:
                sql = migration.timescale_sql
            if on_apply is not None:
                on_apply(migration)
            async with conn.transaction():
                await conn.execute(cast(LiteralString, sql))
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
        return pending
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
