"""A small CRM in Flask: a PostgreSQL query (psycopg2), an outbound call (requests),
a job enqueued for a worker, a thread joining the request, a scheduler thread."""

import json
import os
import sqlite3
import threading
import time

import psycopg2
import requests
from flask import Flask, Response, jsonify

import tierscope.agent

DSN = os.environ["DATABASE_URL"]
OUTBOUND = os.environ["OUTBOUND_URL"]

app = Flask(__name__)


@app.get("/health")
def health():
    return "ok"


@app.get("/invoices/<int:invoice_id>")
def invoice(invoice_id):
    conn = psycopg2.connect(DSN)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT %s::int + 1", (invoice_id,))
            (value,) = cursor.fetchone()
    finally:
        conn.close()
    outbound = requests.get(OUTBOUND, timeout=5).status_code
    time.sleep(float(os.environ.get("APP_SLEEP", "0")))
    return jsonify(pid=os.getpid(), value=value, outbound=outbound)


@app.post("/jobs/<name>")
def enqueue(name):
    conn = psycopg2.connect(DSN)
    try:
        with conn, conn.cursor() as cursor:
            cursor.execute(
                "INSERT INTO agent_jobs (name, trace) VALUES (%s, %s)",
                (name, json.dumps(tierscope.agent.job_context())),
            )
    finally:
        conn.close()
    return jsonify(pid=os.getpid(), queued=name)


def _recount(invoice_id):
    conn = psycopg2.connect(DSN)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT %s::int * 3", (invoice_id,))
    finally:
        conn.close()


@app.get("/recount/<int:invoice_id>")
def recount(invoice_id):
    # Work handed to a thread: its spans belong to this request's trace.
    worker = threading.Thread(target=_recount, args=(invoice_id,))
    worker.start()
    worker.join()
    return jsonify(pid=os.getpid())


@app.get("/page/streamed")
def streamed_page():
    parts = ("<!doctype html><html><HE", "AD lang=en><title>Leads</title></head>", "<body>Leads</body>")
    return Response((part for part in parts), mimetype="text/html")


@app.get("/page/mislabelled")
def mislabelled_page():
    # Labelled gzip, but it is not: the agent cannot rewrite it and must not break it.
    return Response(MISLABELLED, mimetype="text/html", headers={"Content-Encoding": "gzip"})


MISLABELLED = b"<!doctype html><html><head><title>not gzip</title></head></html>"


def _scheduler():
    # A background thread with no request: its spans are not user transactions.
    while True:
        db = sqlite3.connect(":memory:")
        try:
            db.cursor().execute("SELECT 1").fetchall()
        finally:
            db.close()
        time.sleep(0.5)


if os.environ.get("APP_SCHEDULER"):
    threading.Thread(target=_scheduler, daemon=True).start()
