"""A job worker of the CRM: takes jobs from a PostgreSQL table (psycopg 3) and runs
each inside ``tierscope.agent.run_job`` with the context the request stored."""

import os
import time

import psycopg

import tierscope.agent

DSN = os.environ["DATABASE_URL"]
LINK = os.environ.get("JOB_LINK") == "1"


def main():
    deadline = time.monotonic() + float(os.environ.get("WORKER_SECONDS", "20"))
    wanted = int(os.environ.get("WORKER_JOBS", "1"))
    done = 0
    with psycopg.connect(DSN, autocommit=True) as conn:
        while done < wanted and time.monotonic() < deadline:
            row = conn.execute(
                "DELETE FROM agent_jobs WHERE id = (SELECT id FROM agent_jobs ORDER BY id LIMIT 1 "
                "FOR UPDATE SKIP LOCKED) RETURNING name, trace"
            ).fetchone()
            if row is None:
                time.sleep(0.05)
                continue
            name, carrier = row
            with tierscope.agent.run_job(carrier, name, link=LINK):
                conn.execute("SELECT pg_sleep(0.01)")
            done += 1
    print(f"worker ran {done} jobs", flush=True)


if __name__ == "__main__":
    main()
