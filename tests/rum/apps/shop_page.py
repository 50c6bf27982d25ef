"""A small Flask shop run under ``tierscope-agent run`` for the injection test:
its pages carry no RUM tag of their own (the agent injects it) and each page's
request queries PostgreSQL, so the trace has a database tier."""

import os

import psycopg
from flask import Flask

DSN = os.environ["DATABASE_URL"]

app = Flask(__name__)


@app.get("/health")
def health() -> str:
    return "ok"


@app.get("/orders/<int:number>")
def order(number: int) -> str:
    with psycopg.connect(DSN) as conn:
        conn.execute("SELECT pg_sleep(0.05)")
    return (
        f"<!doctype html><html><head><title>Order {number}</title></head>"
        f"<body><h1>Order {number}</h1><p>Three lines, shipped.</p></body></html>"
    )
