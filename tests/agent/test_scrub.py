"""Scrubbing before anything leaves the process: rules one by one, then a property
test — Hypothesis-made secrets in SQL literals, URLs, headers, e-mail addresses
and phone numbers go through the agent's export to a real collector, and none of
them is found anywhere in the collector's database afterwards."""

from __future__ import annotations

import string
from collections.abc import Iterator

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode
from psycopg import sql

from tierscope.agent.config import DEFAULT_SENSITIVE_PARAMS
from tierscope.agent.encode import SpanEncoder
from tierscope.agent.export import OtlpHttpSender
from tierscope.agent.queue import ExportQueue
from tierscope.agent.scrub import Scrubber, scrub_sql
from tierscope.agent.stats import AgentStats
from tierscope.testing.collector import CollectorProcess
from tierscope.testing.figures import Tally, tally

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
    "a backslash ends no standard string: the next literal is one of its own": (
        "SELECT 'C:\\' || 'hunter2'",
        "SELECT ? || ?",
    ),
}


def t17() -> Tally:
    return tally("T-17").describe(
        "Hypothesis SQL with literals; URLs with user:pass@, token=, sig=, X-Amz-Signature=; "
        "Authorization/Cookie headers; e-mails and phone numbers; the agent's real exporter to a real "
        "collector",
        "literals become ?, credentials and sensitive parameters REDACTED, headers dropped unless "
        "allowed, e-mails masked; no generated secret found anywhere in the collector's database",
    )


@pytest.mark.parametrize(("statement", "expected"), SQL_CASES.values(), ids=SQL_CASES.keys())
def test_sql(statement: str, expected: str) -> None:
    assert scrub_sql(statement) == expected
    t17().count(fixed_cases=1)


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
    "a password holding an @ goes whole": (
        "postgresql://ann:p@ss@db/crm",
        "postgresql://REDACTED:REDACTED@db/crm",
    ),
    "encoded parameter names and the fragment are scrubbed": (
        "https://erp.example.com/cb?to%6Ben=t0k#access_token=a1&state=s",
        "https://erp.example.com/cb?to%6Ben=REDACTED#access_token=REDACTED&state=s",
    ),
}


@pytest.mark.parametrize(("url", "expected"), URL_CASES.values(), ids=URL_CASES.keys())
def test_urls(url: str, expected: str) -> None:
    assert SCRUBBER.url(url) == expected
    t17().count(fixed_cases=1)


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
    t17().count(fixed_cases=1)


def test_masking_can_be_turned_off() -> None:
    assert (
        Scrubber((), mask=()).mask("ann@example.com +49 30 1234 5678") == "ann@example.com +49 30 1234 5678"
    )


TEXT_CASES = {
    "credentials in a URL inside a message": (
        "could not connect to postgresql://ann:hunter2@db:5432/crm: timeout",
        "could not connect to postgresql://REDACTED:REDACTED@db:5432/crm: timeout",
    ),
    "a token in a URL an HTTPError quotes": (
        "401 Client Error: Unauthorized for url: https://api.example.com/x?page=2&token=t0k (retry)",
        "401 Client Error: Unauthorized for url: https://api.example.com/x?page=2&token=REDACTED (retry)",
    ),
    "a query string without a scheme": (
        "GET /login?password=pw1&next=/",
        "GET /login?password=REDACTED&next=/",
    ),
    "prose is kept": ("order 42 of ann: total=17 EUR", "order 42 of ann: total=17 EUR"),
}


@pytest.mark.parametrize(("text", "expected"), TEXT_CASES.values(), ids=TEXT_CASES.keys())
def test_urls_inside_any_value(text: str, expected: str) -> None:
    assert SCRUBBER.value("app.note", text) == expected
    assert SCRUBBER.error(text) == expected
    t17().count(fixed_cases=1)


ERROR_CASES = {
    "psycopg quotes the statement after LINE n:": (
        'syntax error at or near "AND"\nLINE 1: SELECT * FROM users WHERE pw=\'hunter2\' AND AND\n'
        "                                                   ^",
        'syntax error at or near "AND"\nLINE 1: SELECT * FROM users WHERE pw=? AND AND\n'
        "                                                   ^",
    ),
    "PostgreSQL's DETAIL quotes the row": (
        'duplicate key value violates unique constraint "k"\nDETAIL:  Key (token)=(s3cr3t) already exists.',
        'duplicate key value violates unique constraint "k"\nDETAIL:  Key (token)=(?) already exists.',
    ),
    "SQLAlchemy quotes statement and parameters": (
        "(psycopg.errors.Error) boom\n[SQL: SELECT a\nFROM t WHERE b = 'x1' AND c = 42]\n"
        "[parameters: {'pw': 'hunter2'}]\n(Background on this error at: https://sqlalche.me/e/20/f405)",
        "(psycopg.errors.Error) boom\n[SQL: SELECT a\nFROM t WHERE b = ? AND c = ?]\n"
        "[parameters: {?: ?}]\n(Background on this error at: https://sqlalche.me/e/20/f405)",
    ),
    "a message without SQL is kept": ("order 42 not found: 'ann'", "order 42 not found: 'ann'"),
}


@pytest.mark.parametrize(("text", "expected"), ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_sql_quoted_in_error_texts(text: str, expected: str) -> None:
    assert SCRUBBER.error(text) == expected
    assert SCRUBBER.value("exception.message", text) == expected
    t17().count(fixed_cases=1)


def test_headers_are_dropped_unless_allowed() -> None:
    assert SCRUBBER.keeps("http.request.header.content_type")
    assert not SCRUBBER.keeps("http.request.header.authorization")
    assert not SCRUBBER.keeps("http.response.header.set_cookie")
    assert SCRUBBER.keeps("http.route")


# -- generated SQL and URLs ------------------------------------------------------------------------

secrets = st.text(string.ascii_letters + string.digits, min_size=10, max_size=20).map(lambda s: "Zx9" + s)
# Around a secret, what makes literals hard to find: quotes, backslashes, dollars, comment
# marks, semicolons, unicode (no */ : PostgreSQL nests comments).
_TRICKY = st.text("'\\\"$-;, é中😀\nab", max_size=6)


@st.composite
def sql_literal(draw: st.DrawFn) -> tuple[str, str, str]:
    """(SQL text, what scrubbing leaves of it, the secret inside)."""
    kind = draw(st.sampled_from(["string", "escape", "dollar", "number", "block", "line"]))
    if kind == "number":
        number = draw(st.integers(10**12, 10**13))
        tail = draw(st.sampled_from(["", ".5", "e3", ".25E-2"]))
        return f"{number}{tail}", "?", str(number)
    secret = draw(secrets)
    text = draw(_TRICKY) + secret + draw(_TRICKY)
    if kind == "string":
        return "'" + text.replace("'", "''") + "'", "?", secret
    if kind == "escape":
        return "E'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'", "?", secret
    if kind == "dollar":
        tag = draw(st.sampled_from(["", "fn", "q_1"]))
        text = text.replace("$", "")
        return f"${tag}${text}${tag}$", "?", secret
    if kind == "block":
        return "/* " + text.replace("*", "") + " */", "", secret
    return "-- " + text.replace("\n", " ") + "\n", "\n", secret


@st.composite
def sql_statements(draw: st.DrawFn) -> tuple[str, str, list[str]]:
    """(statement, its scrubbed form, the secrets in it)."""
    literals = draw(st.lists(sql_literal(), min_size=1, max_size=5))
    columns = [f"c{n}" for n in range(len(literals))]
    # (never run: scrubbing these statements is what is under test)
    statement = "SELECT id FROM orders_2024 WHERE " + " AND ".join(  # noqa: S608
        f"{column} = {text}" for column, (text, _, _) in zip(columns, literals, strict=True)
    )
    expected = "SELECT id FROM orders_2024 WHERE " + " AND ".join(  # noqa: S608
        f"{column} = {kept}" for column, (_, kept, _) in zip(columns, literals, strict=True)
    )
    return statement, expected, [secret for _, _, secret in literals]


@settings(max_examples=300, deadline=None)
@given(sql_statements())
def test_generated_sql_keeps_keywords_and_names_and_no_literal(generated: tuple[str, str, list[str]]) -> None:
    statement, expected, hidden = generated
    scrubbed = scrub_sql(statement)
    assert scrubbed == expected
    assert not any(secret in scrubbed for secret in hidden)
    t17().count(generated_sql=1, sql_literals=len(hidden), literals_found=0)


_ENCODED = {"token": "to%6Ben", "password": "pass%77ord", "sig": "%73ig"}


@st.composite
def urls(draw: st.DrawFn) -> tuple[str, list[str]]:
    """(a URL with secrets in its userinfo, query and fragment, the secrets)."""
    user, password, value, in_fragment = draw(secrets), draw(secrets), draw(secrets), draw(secrets)
    escaped = draw(st.sampled_from(["", "%40", "@", "%3A"]))  # before the secret: it must go too
    name = draw(st.sampled_from(["token", "password", "sig", "X-Amz-Signature", "TOKEN"]))
    name = _ENCODED.get(name, name) if draw(st.booleans()) else name
    scheme = draw(st.sampled_from(["https", "postgresql", "redis"]))
    url = f"{scheme}://{user}:{escaped}{password}@host.example.com:8443/p/a.pdf?page=2&{name}={value}"
    url += f"#access_token={in_fragment}&state=ok" if draw(st.booleans()) else f"&secret={in_fragment}"
    return url, [user, password, value, in_fragment]


@settings(max_examples=200, deadline=None)
@given(urls(), st.sampled_from(["url.full", "app.note", "exception.message"]))
def test_generated_urls_keep_no_secret_wherever_they_are(generated: tuple[str, list[str]], key: str) -> None:
    url, hidden = generated
    text = url if key == "url.full" else f"request to {url} failed"
    scrubbed = SCRUBBER.value(key, text)
    assert "page=2" in scrubbed
    assert not any(secret in scrubbed for secret in hidden), scrubbed
    t17().count(generated_urls=1, url_secrets=len(hidden), url_secrets_found=0)


# -- the property: nothing secret reaches the collector's database --------------------------------

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


# Each example scans the whole database: few examples, no shrinking (a failure prints
# its example as drawn); the generated SQL and URLs get their breadth in the tests above.
@settings(
    max_examples=12,
    deadline=None,
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    statement=sql_statements(),
    url=urls(),
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
    statement: tuple[str, str, list[str]],
    url: tuple[str, list[str]],
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
        # An error quoting a URL with a token, a DSN with a password, and SQL with a literal.
        failure = RuntimeError(  # (SQL quoted in a message, never run)
            f"401 for url: https://api.example.com/v1?token={token}; "  # noqa: S608
            f"could not reach postgresql://{user}:{password}@db:5432/crm\n"
            f"LINE 1: UPDATE users SET pw = '{literal}' WHERE id = 7\n"
            f"DETAIL:  Key (login)=({dollar}) already exists."
        )
        server.record_exception(failure)
        server.set_status(Status(StatusCode.ERROR, str(failure)))
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
        with tracer.start_as_current_span(
            "SELECT orders_2024",
            kind=SpanKind.CLIENT,
            attributes={"db.system": "postgresql", "db.statement": statement[0]},
        ):
            pass
        with tracer.start_as_current_span(
            "GET", kind=SpanKind.CLIENT, attributes={"url.full": url[0], "app.note": f"fetched {url[0]}"}
        ) as call:
            call.set_status(Status(StatusCode.ERROR, f"HTTPError: 403 for url: {url[0]}"))
    assert queue.force_flush(20_000)

    stored = _database_text(collector.database_url)
    assert "SELECT id FROM users WHERE login = ? AND note = ?" in stored  # what BT naming needs stays
    # the error stays readable (it is kept in the stored span, span_pb, shown as hex)
    assert b"LINE 1: UPDATE users SET pw = ? WHERE id = ?".hex() in stored
    planted = (
        *statement[2],
        *url[1],
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
    )
    for secret in planted:
        assert secret not in stored
        assert secret.encode().hex() not in stored
    t17().count(exported_examples=1, secrets_planted=len(planted), secrets_in_database=0)
