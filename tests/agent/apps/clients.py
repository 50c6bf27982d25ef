"""Every client library the agent covers, used once inside one job: SQLAlchemy,
psycopg 3 and psycopg2 on PostgreSQL, sqlite3, requests, httpx, urllib3."""

import os
import sqlite3

import httpx
import psycopg
import psycopg2
import requests
import sqlalchemy
import urllib3

import tierscope.agent

DSN = os.environ["DATABASE_URL"]
OUTBOUND = os.environ["OUTBOUND_URL"]


def main() -> None:
    engine = sqlalchemy.create_engine(DSN.replace("postgresql://", "postgresql+psycopg://", 1))
    with tierscope.agent.run_job(None, "sync_clients") as span:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 40 + 2")).scalar_one()
        with psycopg.connect(DSN) as conn:
            conn.execute("SELECT 'psycopg'").fetchone()
        with psycopg2.connect(DSN) as conn, conn.cursor() as cursor:
            cursor.execute("SELECT 'psycopg2', 2")
            cursor.fetchone()
        db = sqlite3.connect(":memory:")
        db.cursor().execute("SELECT 'sqlite'").fetchall()
        db.close()
        requests.get(OUTBOUND + "?via=requests", timeout=5)
        httpx.get(OUTBOUND + "?via=httpx", timeout=5)
        urllib3.PoolManager().request("GET", OUTBOUND + "?via=urllib3", timeout=5)
        print("trace", format(span.get_span_context().trace_id, "032x"), flush=True)


if __name__ == "__main__":
    main()
