"""The embedded PostgreSQL survives what a laptop or a container does to it."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest

from tierscope.store.embedded import EmbeddedPostgres, EmbeddedPostgresError


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
