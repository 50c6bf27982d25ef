"""Migrations and the declared schema agree, and migrating is repeatable."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from importlib import resources

import psycopg
import pytest

from tierscope.store import migrations
from tierscope.store.embedded import binaries_dir

pytestmark = pytest.mark.anyio


def schema_of(dsn: str) -> list[str]:
    dump = subprocess.run(
        [str(binaries_dir() / "pg_dump"), "--schema-only", "--no-owner", "--no-privileges", dsn],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = []
    for line in dump.splitlines():
        if not line.strip() or line.startswith(
            ("--", "SET ", "SELECT pg_catalog.set_config", "\\restrict", "\\unrestrict")
        ):
            continue
        lines.append(line)
    return lines


async def test_a_migrated_store_equals_the_declared_schema(database_factory: Callable[..., str]) -> None:
    migrated, declared = database_factory(empty=True), database_factory(empty=True)
    async with await psycopg.AsyncConnection.connect(migrated, autocommit=True) as conn:
        applied = await migrations.migrate(conn)
    assert [m.version for m in applied] == [m.version for m in migrations.available()]
    schema_sql = resources.files("tierscope.store").joinpath("sql/schema.sql").read_text()
    with psycopg.connect(declared, autocommit=True) as conn:
        conn.execute(schema_sql)  # type: ignore[arg-type]
    assert schema_of(migrated) == schema_of(declared)


async def test_migrating_twice_applies_nothing_the_second_time(database_factory: Callable[..., str]) -> None:
    dsn = database_factory(empty=True)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        assert await migrations.migrate(conn)
        assert await migrations.migrate(conn) == []
        assert await migrations.applied_versions(conn) == {m.version for m in migrations.available()}


def test_migration_files_are_numbered_without_gaps() -> None:
    versions = [m.version for m in migrations.available()]
    assert versions == list(range(1, len(versions) + 1))


async def test_concurrent_collectors_migrate_once(database_factory: Callable[..., str]) -> None:
    import anyio

    dsn = database_factory(empty=True)
    results: list[int] = []

    async def one() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            results.append(len(await migrations.migrate(conn)))

    async with anyio.create_task_group() as group:
        for _ in range(3):
            group.start_soon(one)
    assert sorted(results) == [0, 0, len(migrations.available())]
