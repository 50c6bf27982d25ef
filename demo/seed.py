"""The demo applications' own databases: created in the same PostgreSQL server
as the store (the embedded one, or the one ``TIERSCOPE_DATABASE_URL`` points at),
with their schemas and a small, seeded business: users, leads, contacts,
opportunities; customers, products, stock, orders and a job queue.
"""

from __future__ import annotations

import random

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

DATABASES = {"crm": "tierscope_demo_crm", "erp": "tierscope_demo_erp"}
USERS = 60  # crm users user01..user60, password "demo"
PRODUCTS = 200
CUSTOMERS = 300

_CRM_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id serial PRIMARY KEY, login text UNIQUE NOT NULL, password text NOT NULL);
CREATE TABLE IF NOT EXISTS leads (
    id serial PRIMARY KEY, name text NOT NULL, company text NOT NULL, city text NOT NULL,
    status text NOT NULL DEFAULT 'new', owner integer, created_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX IF NOT EXISTS leads_company ON leads (company);
CREATE TABLE IF NOT EXISTS contacts (
    id serial PRIMARY KEY, name text NOT NULL, company text NOT NULL, city text NOT NULL);
CREATE TABLE IF NOT EXISTS opportunities (
    id serial PRIMARY KEY, contact_id integer NOT NULL REFERENCES contacts, stage text NOT NULL,
    amount numeric(12, 2) NOT NULL);
"""

_ERP_SCHEMA = """
CREATE TABLE IF NOT EXISTS customers (
    id serial PRIMARY KEY, name text NOT NULL, credit_limit numeric NOT NULL);
CREATE TABLE IF NOT EXISTS inventory (sku text PRIMARY KEY, name text NOT NULL, on_hand integer NOT NULL,
    price numeric(10, 2) NOT NULL);
CREATE TABLE IF NOT EXISTS sales_orders (
    id serial PRIMARY KEY, customer_id integer NOT NULL REFERENCES customers,
    status text NOT NULL DEFAULT 'open', total numeric(12, 2) NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS order_lines (order_id integer NOT NULL REFERENCES sales_orders, sku text NOT NULL,
    quantity integer NOT NULL, price numeric(10, 2) NOT NULL);
CREATE TABLE IF NOT EXISTS invoices (id serial PRIMARY KEY, order_id integer NOT NULL REFERENCES sales_orders,
    amount numeric(12, 2) NOT NULL, posted_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS ledger (
    invoice_id integer NOT NULL, account text NOT NULL, amount numeric(12, 2) NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id bigserial PRIMARY KEY, kind text NOT NULL, payload jsonb NOT NULL, trace jsonb NOT NULL,
    state text NOT NULL DEFAULT 'queued', enqueued_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz, finished_at timestamptz);
CREATE INDEX IF NOT EXISTS jobs_queued ON jobs (id) WHERE state = 'queued';
CREATE TABLE IF NOT EXISTS import_rows (job_id bigint NOT NULL, line integer NOT NULL, name text NOT NULL);
"""

_CITIES = ("Berlin", "Hamburg", "Munich", "Lyon", "Turin", "Porto", "Leeds", "Ghent")
_WORDS = ("Acme", "Globex", "Initech", "Umbra", "Vertex", "Nimbus", "Orbit", "Quanta", "Helix", "Zephyr")
_STAGES = ("qualify", "propose", "negotiate", "won", "lost")


def database_url(store_dsn: str, app: str) -> str:
    """The DSN of an app's database: the store's server, the app's own database."""
    return make_conninfo(store_dsn, dbname=DATABASES[app])


def create(store_dsn: str) -> dict[str, str]:
    """Create (once) and seed both databases; returns their DSNs by app."""
    params = conninfo_to_dict(store_dsn)
    with psycopg.connect(make_conninfo(**params), autocommit=True) as conn:
        existing = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
        for name in DATABASES.values():
            if name not in existing:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    urls = {app: database_url(store_dsn, app) for app in DATABASES}
    with psycopg.connect(urls["crm"]) as conn:
        conn.execute(_CRM_SCHEMA)
        if conn.execute("SELECT count(*) FROM users").fetchone() == (0,):
            _seed_crm(conn, random.Random(1))
    with psycopg.connect(urls["erp"]) as conn:
        conn.execute(_ERP_SCHEMA)
        # Jobs left by a previous run would all run at once at start: start afresh.
        conn.execute("DELETE FROM jobs WHERE state <> 'done'")
        if conn.execute("SELECT count(*) FROM customers").fetchone() == (0,):
            _seed_erp(conn, random.Random(2))
    return urls


def _company(rng: random.Random) -> str:
    return f"{rng.choice(_WORDS)} {rng.choice(('GmbH', 'SA', 'Ltd', 'BV', 'SpA'))} {rng.randint(1, 99)}"


def _seed_crm(conn: psycopg.Connection, rng: random.Random) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO users (login, password) VALUES (%s, 'demo')",
            [(f"user{n:02d}",) for n in range(1, USERS + 1)],
        )
        cur.executemany(
            "INSERT INTO leads (name, company, city, owner) VALUES (%s, %s, %s, %s)",
            [(f"Lead {n}", _company(rng), rng.choice(_CITIES), rng.randint(1, USERS)) for n in range(2000)],
        )
        cur.executemany(
            "INSERT INTO contacts (name, company, city) VALUES (%s, %s, %s)",
            [(f"Contact {n}", _company(rng), rng.choice(_CITIES)) for n in range(500)],
        )
        cur.executemany(
            "INSERT INTO opportunities (contact_id, stage, amount) VALUES (%s, %s, %s)",
            [(rng.randint(1, 500), rng.choice(_STAGES), rng.randint(1, 500) * 100) for _ in range(1500)],
        )


def _seed_erp(conn: psycopg.Connection, rng: random.Random) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO customers (name, credit_limit) VALUES (%s, %s)",
            [(_company(rng), rng.randint(10, 500) * 1000) for _ in range(CUSTOMERS)],
        )
        cur.executemany(
            "INSERT INTO inventory (sku, name, on_hand, price) VALUES (%s, %s, %s, %s)",
            [
                (f"SKU-{n:04d}", f"Part {n}", rng.randint(0, 900), rng.randint(100, 99900) / 100)
                for n in range(PRODUCTS)
            ],
        )
