"""RUM rollups under ``kill -9``: the real ``tierscope process`` (whose first shard
joins and rolls up experiences) is killed at random moments while it works
through thousands of experiences; after a last run every experience is counted
exactly once, at every resolution."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from tierscope.store import Database
from tierscope.store.rum import ExperienceRow, write_beacon
from tierscope.testing.collector import tierscope_command

EXPERIENCES = 10_000
SITES = ("head-office", "branch-b", None)


def experiences(rnd: random.Random) -> list[ExperienceRow]:
    now = datetime.now(UTC)
    return [
        ExperienceRow(
            id=rnd.randbytes(16).hex(),
            kind="request",
            start_time=now - timedelta(minutes=rnd.randrange(0, 180)),
            page=rnd.choice(["Post invoice", "Create lead"]),
            url=None,
            method="POST",
            status=200,
            site=rnd.choice(SITES),
            session_id=None,
            user_hash=None,
            browser=None,
            trace_id=None,
            timing={"requestStart": 1.0, "responseStart": 50.0, "responseEnd": 60.0, "end": 60.0},
            vitals={},
            final=False,
            duration_ms=60.0,
            outcome="ok",
        )
        for _ in range(EXPERIENCES)
    ]


async def store(dsn: str, rows: list[ExperienceRow]) -> None:
    database = Database(dsn, pool_size=1)
    await database.open()
    try:
        async with database.connection() as conn:
            cur = await conn.execute("INSERT INTO tenants (name) VALUES ('crash') RETURNING id")
            row = await cur.fetchone()
            assert row is not None
            for first in range(0, len(rows), 500):
                await write_beacon(conn, row[0], rows[first : first + 500], [])
    finally:
        await database.close()


def one(dsn: str, query: str) -> tuple:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return tuple(row)


def test_killed_at_random_moments_every_experience_is_counted_exactly_once(
    database_url: str, tmp_path: Path
) -> None:
    asyncio.run(store(database_url, experiences(random.Random(11))))
    env = {
        **os.environ,
        "TIERSCOPE_DATABASE_URL": database_url,
        "TIERSCOPE_RUM_ROLLUP_WAIT": "0s",
        "TIERSCOPE_LOG_LEVEL": "warning",
    }
    rnd = random.Random(12)
    progress: list[int] = []  # experiences rolled up after each kill
    for _ in range(3):
        process = subprocess.Popen(
            [*tierscope_command(), "process", "--data-dir", str(tmp_path)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        # Once it is working (start-up takes seconds on a busy machine), a moment later.
        before, deadline = progress[-1] if progress else 0, time.monotonic() + 90
        while one(database_url, "SELECT count(*) FROM rum_experiences WHERE rolled_up")[0] == before:
            assert time.monotonic() < deadline, "the processor did not start rolling up"
            time.sleep(0.05)
        time.sleep(rnd.uniform(0.0, 0.4))
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # mid-transaction, anywhere
        process.wait(timeout=30)
        progress.append(one(database_url, "SELECT count(*) FROM rum_experiences WHERE rolled_up")[0])
    # At least two kills came while there was work left (else this test shows little). The
    # last may come after the end: a chunk takes a fraction of a second on a quiet machine.
    assert sum(1 for done in progress if done < EXPERIENCES) >= 2, progress
    # A last run, to the end.
    process = subprocess.Popen(
        [*tierscope_command(), "process", "--data-dir", str(tmp_path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while one(database_url, "SELECT count(*) FROM rum_experiences WHERE NOT rolled_up") != (0,):
            assert time.monotonic() < deadline, "the experiences were not all rolled up"
            time.sleep(0.5)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    for resolution in ("minute", "hour", "day"):
        counted = one(database_url, f"SELECT sum(count) FROM rum_rollups WHERE resolution = '{resolution}'")  # noqa: S608
        assert counted == (EXPERIENCES,), resolution
    # And per (page, site): the rollups agree with the experiences themselves.
    mismatches = one(
        database_url,
        """SELECT count(*) FROM (
             SELECT page AS name, COALESCE(site, '') AS site, count(*) AS n FROM rum_experiences
             GROUP BY 1, 2) e
           FULL JOIN (SELECT name, site, sum(count) AS n FROM rum_rollups WHERE resolution = 'minute'
                      GROUP BY 1, 2) r USING (name, site)
           WHERE e.n IS DISTINCT FROM r.n""",
    )
    assert mismatches == (0,)
