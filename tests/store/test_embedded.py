"""The embedded PostgreSQL survives what a laptop or a container does to it."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest

from tierscope.store.embedded import (
    EmbeddedPostgres,
    EmbeddedPostgresError,
    available_memory,
    shared_buffers_for,
)

GIB = 1024**3


def test_a_stale_pid_file_naming_another_process_does_not_fool_start(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "data")
    server.start()
    server.stop("immediate")  # a crash leaves postmaster.pid behind
    pid_file = server.pgdata / "postmaster.pid"
    lines = pid_file.read_text().splitlines() if pid_file.exists() else ["0"]
    lines[0] = str(os.getpid())  # the pid now belongs to someone else (this test)
    pid_file.write_text("\n".join(lines) + "\n")
    try:
        dsn = server.restart_after_crash()
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.stop()


def test_an_interrupted_first_start_is_made_again(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "postgres.initializing").touch()  # left by a first start killed half-way
    (data / "postgres").mkdir()
    (data / "postgres" / "PG_VERSION").write_text("18\n")
    server = EmbeddedPostgres(data)
    try:
        with psycopg.connect(server.start()) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("tierscope",)
    finally:
        server.stop()
    assert not (data / "postgres.initializing").exists()


def test_a_database_without_its_access_file_is_never_wiped(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "data")
    server.start()
    server.stop()
    server.access_file.unlink()  # e.g. deleted by hand
    with pytest.raises(EmbeddedPostgresError, match=r"postgres\.json is missing"):
        EmbeddedPostgres(tmp_path / "data").start()
    assert (server.pgdata / "PG_VERSION").exists()


@pytest.mark.parametrize(
    ("memory", "expected_mb"),
    [
        pytest.param(GIB // 2, 256, id="a small container keeps the 256 MiB floor"),
        pytest.param(4 * GIB, 1024, id="a 4 GiB machine gives a quarter"),
        pytest.param(6 * GIB, 1536, id="a 6 GiB machine gives a quarter"),
        pytest.param(64 * GIB, 2048, id="a big server stops at 2 GiB"),
    ],
)
def test_shared_buffers_are_a_quarter_of_memory_within_bounds(memory: int, expected_mb: int) -> None:
    assert shared_buffers_for(memory) == expected_mb


def test_a_new_cluster_runs_with_shared_buffers_sized_for_this_machine(tmp_path: Path) -> None:
    """Processing re-reads spans 15-20 s after they arrived: they must still be in
    shared buffers, which the old fixed 256 MiB could not hold at ingest speed."""
    server = EmbeddedPostgres(tmp_path / "data")
    try:
        with psycopg.connect(server.start()) as conn:
            blocks = conn.execute(
                "SELECT setting::bigint * pg_size_bytes(unit) FROM pg_settings WHERE name = 'shared_buffers'"
            ).fetchone()
    finally:
        server.stop()
    assert blocks is not None
    assert blocks[0] == shared_buffers_for(available_memory()) * 1024 * 1024
