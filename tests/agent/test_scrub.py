"""Scrubbing before anything leaves the process: rules one by one, then a property
test — Hypothesis-made secrets in SQL literals, URLs, headers, e-mail addresses
and phone numbers go through the agent's export to a real collector, and none of
them is found anywhere in the collector's database afterwards."""

from __future__ import annotations

import string
from collections.abc import Iterator

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from psycopg import sql

from tierscope.agent.config import DEFAULT_SENSITIVE_PARAMS
from tierscope.agent.encode import SpanEncoder
from tierscope.agent.export import OtlpHttpSender
from tierscope.agent.queue import ExportQueue
from tierscope.agent.scrub import Scrubber, scrub_sql
from tierscope.agent.stats import AgentStats
from tierscope.testing.collector import CollectorProcess

SQL_CASES = {
    "string literals become ?": (
        "SELECT * FROM users WHERE email = 'ann@example.com' AND name = 'O''Brien'",
        "SELECT * FROM users WHERE email = ? AND name = ?",
    ),
    "numbers become ? but names keep their digits": (
        "UPDATE stock_2024 SET qty = qty - 3.5 WHERE id = 42 AND code = 0x1F",
        "UPDATE stock_2024 SET qty = qty - ? WHERE id = ? AND code = ?",
    ),
    "placeholders stay": (
        "INSERT INTO t (a, b, c) VALUES (%s, $1, %(name)s)",
        "INSERT INTO t (a, b, c) VALUES (%s, $1, %(name)s)",
    ),
    "dollar-quoted and escape strings become ?": (
        "SELECT $$secret$$, $fn$ more $fn$, E'it\\'s'",
        "SELECT ?, ?, ?",
    ),
    "comments go": ("SELECT 1 /* user=ann */ -- token=abc\nFROM dual", "SELECT ?  \nFROM dual"),
    "quoted identifiers stay": (
        'SELECT "Order 2"."Total" FROM "Order 2"',
        'SELECT "Order 2"."Total" FROM "Order 2"',
    ),
    "an unterminated literal is cut to the end": (
        "SELECT * FROM t WHERE a = 'oops",
        "SELECT * FROM t WHERE a = ?",
    ),
}


@pytest.mark.parametrize(("statement", "expected"), SQL_CASES.values(), ids=SQL_CASES.keys())
def test_sql(statement: str, expected: str) -> None:
    assert scrub_sql(statement) == expected


SCRUBBER = Scrubber((*DEFAULT_SENSITIVE_PARAMS, "tenant_pin"), capture_headers=("content-type",))

URL_CASES = {
    "credentials in a URL are redacted": (
        "https://ann:hunter2@erp.example.com/api",
        "https://REDACTED:REDACTED@erp.example.com/api",
    ),
    "sensitive parameters are redacted, others kept": (
        "https://s3.example.com/a.pdf?X-Amz-Signature=abc123&page=2&token=t0k",
        "https://s3.example.com/a.pdf?X-Amz-Signature=REDACTED&page=2&token=REDACTED",
    ),
    "parameter names match in any case, configured ones too": (
        "/login?PassWord=pw&Tenant_Pin=99&next=/home",
        "/login?PassWord=REDACTED&Tenant_Pin=REDACTED&next=/home",
    ),
    "a bare query string is scrubbed": ("sig=xyz&lang=de", "sig=REDACTED&lang=de"),
    "a URL without secrets is unchanged": (
        "https://erp.example.com/invoices/7",
        "https://erp.example.com/invoices/7",
    ),
}


@pytest.mark.parametrize(("url", "expected"), URL_CASES.values(), ids=URL_CASES.keys())
def test_urls(url: str, expected: str) -> None:
    assert SCRUBBER.url(url) == expected


MASK_CASES = {
    "e-mail addresses are masked": (
        "mail to ann.lee+crm@sub.example.co.uk now",
        "mail to REDACTED_EMAIL now",
    ),
    "international phone numbers are masked": ("call +49 30 1234 5678", "call REDACTED_PHONE"),
    "North American phone numbers are masked": ("call (555) 123-4567 today", "call REDACTED_PHONE today"),
    "dates, versions and ids are not phone numbers": (
        "2024-01-15 v1.45.1 order 123456789 10.0.0.1",
        "2024-01-15 v1.45.1 order 123456789 10.0.0.1",
    ),
    "RPC methods and model names are kept": ("res.partner/write", "res.partner/write"),
}


@pytest.mark.parametrize(("text", "expected"), MASK_CASES.values(), ids=MASK_CASES.keys())
def test_masking(text: str, expected: str) -> None:
    assert SCRUBBER.mask(text) == expected


def test_masking_can_be_turned_off() -> None:
    assert (
        Scrubber((), mask=()).mask("ann@example.com +49 30 1234 5678") == "ann@example.com +49 30 1234 5678"
    )


def test_headers_are_dropped_unless_allowed() -> None:
    assert SCRUBBER.keeps("http.request.header.content_type")
    assert not SCRUBBER.keeps("http.request.header.authorization")
    assert not SCRUBBER.keeps("http.response.header.set_cookie")
    assert SCRUBBER.keeps("http.route")


# -- the property: nothing secret reaches the collector's database --------------------------------

secrets = st.text(string.ascii_letters + string.digits, min_size=10, max_size=20).map(lambda s: "Zx9" + s)
phones = st.tuples(
    st.integers(10, 99), st.integers(100, 999), st.integers(1000, 9999), st.integers(1000, 9999)
).map(lambda p: f"+{p[0]} {p[1]} {p[2]} {p[3]}")


@pytest.fixture(scope="module")
def pipeline(collector: CollectorProcess) -> Iterator[tuple[TracerProvider, ExportQueue]]:
    provider = TracerProvider(resource=Resource.create({"service.name": "crm-scrub"}), shutdown_on_exit=False)
    sender = OtlpHttpSender(f"{collector.url}/v1/traces", ingest_key=collector.credentials()["ingest_key"])
    queue = ExportQueue(
        SpanEncoder(Scrubber(DEFAULT_SENSITIVE_PARAMS)), sender, AgentStats(), schedule_delay=0.05
    )
    provider.add_span_processor(queue)
    yield provider, queue
    provider.shutdown()


def _database_text(dsn: str) -> str:
    """Every row of every table of the collector's database, as text (bytea as hex)."""
    rows = []
    with psycopg.connect(dsn) as conn:
        tables = conn.execute(
            "SELECT schemaname, tablename FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        for schema, table in tables:
            query = sql.SQL("SELECT t::text FROM {}.{} t").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
            rows += [row[0] for row in conn.execute(query)]
    return "\n".join(rows)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    literal=secrets,
    dollar=secrets,
    comment=secrets,
    user=secrets,
    password=secrets,
    token=secrets,
    signature=secrets,
    header=secrets,
    email_local=secrets,
    phone=phones,
)
def test_no_secret_reaches_the_database(
    collector: CollectorProcess,
    pipeline: tuple[TracerProvider, ExportQueue],
    literal: str,
    dollar: str,
    comment: str,
    user: str,
    password: str,
    token: str,
    signature: str,
    header: str,
    email_local: str,
    phone: str,
) -> None:
    provider, queue = pipeline
    tracer = provider.get_tracer("crm.tests")
    email = f"{email_local}@example.com"
    with tracer.start_as_current_span(
        f"POST /customers notify {email}",
        kind=SpanKind.SERVER,
        attributes={
            "http.route": "/customers",
            "http.target": f"/customers?password={password}&page=2",
            "url.query": f"token={token}&page=2",
            "http.request.header.authorization": (f"Bearer {header}",),
            "http.request.header.cookie": (f"session={header}",),
            "http.response.header.set_cookie": (f"session={header}; HttpOnly",),
            "app.note": f"call {phone} or write to {email}",
        },
    ) as server:
        server.add_event("exception", {"exception.message": f"no such user {email}"})
        with tracer.start_as_current_span(
            "SELECT crm",
            kind=SpanKind.CLIENT,
            attributes={
                "db.system": "postgresql",
                # A statement an app built with literals inlined: what scrubbing is for.
                "db.statement": f"SELECT id FROM users WHERE login = '{literal}' "  # noqa: S608
                f"AND note = $${dollar}$$ /* {comment} */",
            },
        ):
            pass
        with tracer.start_as_current_span(
            "GET",
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": "GET",
                "url.full": f"https://{user}:{password}@files.example.com/a.pdf"
                f"?X-Amz-Signature={signature}&sig={signature}&page=2",
            },
        ):
            pass
    assert queue.force_flush(20_000)

    stored = _database_text(collector.database_url)
    assert "SELECT id FROM users WHERE login = ? AND note = ?" in stored  # what BT naming needs stays
    for secret in (
        literal,
        dollar,
        comment,
        user,
        password,
        token,
        signature,
        header,
        email,
        email_local,
        phone,
    ):
        assert secret not in stored
        assert secret.encode().hex() not in stored
