"""Roles of API tokens, and authentication (RELIABILITY.md T-14).

viewer reads, editor also writes (silences, acknowledgements, alert rules),
admin also manages keys, retention and purges. The matrix covers every
``/api/v1`` endpoint the router has, so a new endpoint gets a role rule
without anyone writing one: reads need viewer, anything else editor, the
administration router admin.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
import psycopg
import pytest

from tierscope.store import migrations, retention
from tierscope.testing import otlp
from tierscope.testing.figures import Tally, tally
from tierscope.testing.routes import Endpoint, collector_app, endpoints

from .conftest import Estate, cli

ROLES = ("viewer", "editor", "admin")
# Ids that exist for nobody: a caller with the role gets 404, not 403.
NOBODY = {
    "trace_id": "0" * 32,
    "alert_id": "987654321",
    "silence_id": "987654321",
    "slo_id": "no-such-slo",
    "experience_id": "0" * 32,
    "key_id": "987654321",
}
API = [
    e
    for e in endpoints(collector_app())
    if e.path.startswith("/api/v1/") and e.in_schema and not e.path.endswith("openapi.json")
]


def needed(endpoint: Endpoint) -> str:
    if endpoint.module.startswith("tierscope.collector.api.admin."):
        return "admin"
    return "viewer" if endpoint.method == "GET" else "editor"


def t14() -> Tally:
    return tally("T-14").describe(
        "every /api/v1 endpoint with each role, no key, a malformed key, an unknown key, an ingest key, "
        "a RUM key, a basic-auth header; a revoked token; rotation; tokens made before roles",
        "viewer reads, editor also writes, admin also manages keys, retention and purges, else 403 "
        "naming the role needed; bad credentials 401/403; a revoked token stops within the 2 s key "
        "cache; old and new tokens both work during rotation; old tokens became admin",
    )


@pytest.mark.parametrize("endpoint", API, ids=str)
def test_every_api_endpoint_needs_its_role(estate: Estate, endpoint: Endpoint) -> None:
    acme = estate.tenants["acme"]
    url = endpoint.url(NOBODY)
    # A write gets a body that can never be accepted: with the role it is
    # refused as bad input (or not found), without it as forbidden, and
    # nothing changes either way.
    body = None if endpoint.method == "GET" else {"not-a-field": True}
    for role in ROLES:
        response = estate.call(endpoint.method, url, acme.tokens[role], body=body)
        if ROLES.index(role) < ROLES.index(needed(endpoint)):
            assert response.status_code == 403, (role, response.status_code, response.text[:300])
            assert needed(endpoint) in response.json()["detail"], "the refusal names the role needed"
        else:
            assert response.status_code in {200, 400, 404, 422}, (role, response.status_code, response.text)
    bad = (None, "tsa_" + "A" * 43, acme.ingest_key, acme.rum_key, "Basic dXNlcjpwYXNz")
    for key in bad:
        response = estate.call(endpoint.method, url, key, body=body)
        assert response.status_code in {401, 403}, (key, response.status_code)
    t14().count(endpoints=1, requests=len(ROLES) + len(bad), wrong_answers=0)


def test_the_role_matrix_covers_the_writes_the_issue_names() -> None:
    rules = {str(e): needed(e) for e in API}
    assert rules["POST /api/v1/alerts/{alert_id}/ack"] == "editor"
    assert rules["POST /api/v1/silences"] == "editor"
    assert rules["DELETE /api/v1/silences/{silence_id}"] == "editor"
    assert rules["PUT /api/v1/alerting/config"] == "editor"
    assert rules["POST /api/v1/keys"] == "admin"
    assert rules["POST /api/v1/purge"] == "admin"
    assert rules["PUT /api/v1/retention"] == "admin"
    assert rules["GET /api/v1/traces/{trace_id}"] == "viewer"


def test_a_viewer_cannot_acknowledge_but_an_editor_can(estate: Estate) -> None:
    acme = estate.tenants["acme"]
    alert = f"/api/v1/alerts/{acme.ids['alert'][0]}"
    refused = estate.call("POST", alert + "/ack", acme.tokens["viewer"], body={"by": "viewer"})
    assert refused.status_code == 403
    assert estate.call("GET", alert, acme.tokens["viewer"]).json()["state"] == "firing"
    done = estate.call("POST", alert + "/ack", acme.tokens["editor"], body={"by": "editor"})
    assert done.status_code == 200, done.text
    assert estate.call("GET", alert, acme.tokens["viewer"]).json()["state"] == "acknowledged"


def test_the_console_signs_a_viewer_in_and_shows_pages_but_no_write(estate: Estate) -> None:
    viewer = estate.tenants["acme"].tokens["viewer"]
    with httpx.Client(base_url=estate.collector.url, timeout=20) as client:
        signed_in = client.post("/login", data={"token": viewer})
        assert signed_in.status_code == 303
        page = client.get("/")
        assert page.status_code == 200
        writes = [
            e
            for e in endpoints(collector_app())
            if e.module.startswith("tierscope.dashboards.console")
            and e.method != "GET"
            and e.path not in {"/login", "/logout"}
        ]
        for write in writes:  # e.g. acknowledging from the console
            answer = client.request(write.method, write.url(NOBODY), data={})
            assert answer.status_code == 403, (str(write), answer.status_code)


def test_admin_manages_keys_and_a_revoked_token_stops_working(estate: Estate) -> None:
    acme = estate.tenants["acme"]
    made = estate.call("POST", "/api/v1/keys", acme.tokens["admin"], body={"kind": "api", "role": "viewer"})
    assert made.status_code == 201, made.text
    token = made.json()["key"]
    assert made.json()["role"] == "viewer"
    assert estate.call("GET", "/api/v1/alerts", token).status_code == 200
    assert estate.call("POST", "/api/v1/silences", token, body={"matchers": {"a": "b"}}).status_code == 403
    listed = estate.call("GET", "/api/v1/keys", acme.tokens["admin"]).json()["keys"]
    assert made.json()["id"] in {k["id"] for k in listed}
    assert token not in json.dumps(listed), "a listing never shows a secret"
    assert estate.call("DELETE", f"/api/v1/keys/{made.json()['id']}", acme.tokens["admin"]).status_code == 204
    revoked = time.monotonic()
    deadline = revoked + 30  # verified keys are cached for TIERSCOPE_KEY_CACHE_TTL (2 s)
    while estate.call("GET", "/api/v1/alerts", token).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.25)
    refused = estate.call("GET", "/api/v1/alerts", token)
    assert refused.status_code == 403
    assert "revoked" in refused.json()["detail"]
    t14().note(revoked_token_refused_after_s=round(time.monotonic() - revoked, 1))
    wrong = estate.call(
        "POST", "/api/v1/keys", acme.tokens["admin"], body={"kind": "ingest", "role": "admin"}
    )
    assert wrong.status_code == 400
    assert "role" in wrong.json()["detail"]


def test_rotating_keeps_the_old_and_new_admin_tokens_working(estate: Estate) -> None:
    acme = estate.tenants["acme"]
    rotated = json.loads(
        cli(estate.collector, "tenant", "rotate", "acme", "--kind", "api", "--grace", "1h", "--json")
    )
    for token in (acme.tokens["admin"], rotated["api_token"], acme.tokens["viewer"]):
        assert estate.call("GET", "/api/v1/alerts", token).status_code == 200
    assert estate.call("GET", "/api/v1/keys", rotated["api_token"]).status_code == 200


def test_purge_deletes_the_callers_telemetry_only(estate: Estate) -> None:
    acme, globex = estate.tenants["acme"], estate.tenants["globex"]
    trace_id = os.urandom(16)
    body = otlp.request([otlp.span(trace_id=trace_id)], service="acme-purged").SerializeToString()
    assert otlp.post(estate.collector.url, acme.ingest_key, body).status_code == 200
    bad = estate.call("POST", "/api/v1/purge", acme.tokens["admin"], body={"before": "yesterday-ish"})
    assert bad.status_code == 400
    assert "before" in bad.json()["detail"]
    purged = estate.call("POST", "/api/v1/purge", acme.tokens["admin"], body={"before": "now"})
    assert purged.status_code == 200, purged.text
    assert purged.json()["deleted"]["spans"] >= 2
    assert otlp.get_trace(estate.collector.url, acme.tokens["viewer"], trace_id).status_code == 404
    theirs = globex.ids["trace"][0]
    assert otlp.get_trace(estate.collector.url, globex.tokens["viewer"], theirs).status_code == 200


def test_retention_is_the_tenants_own_and_bounded(estate: Estate) -> None:
    admin = estate.tenants["acme"].tokens["admin"]
    default = estate.call("GET", "/api/v1/retention", admin).json()
    assert default["tenant_override"] is False
    too_long = estate.call("PUT", "/api/v1/retention", admin, body={"spans": "400d"})
    assert too_long.status_code == 400
    assert "at most" in too_long.json()["detail"]
    shorter = estate.call("PUT", "/api/v1/retention", admin, body={"spans": "4d"})
    assert shorter.status_code == 200, shorter.text
    assert shorter.json()["spans_seconds"] == 4 * 86400
    other = estate.call("GET", "/api/v1/retention", estate.tenants["globex"].tokens["admin"]).json()
    assert other["tenant_override"] is False

    # What the collector's maintenance does with it, five days on: acme's spans
    # are past its 4 days, globex's (the default 7 days) are not.
    body = otlp.request([otlp.span()], service="acme-kept").SerializeToString()
    assert otlp.post(estate.collector.url, estate.tenants["acme"].ingest_key, body).status_code == 200
    dsn = str(estate.collector.database_url)

    async def five_days_on() -> int:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            return await retention.apply_tenant_retention(conn, datetime.now(UTC) + timedelta(days=5))

    def spans_of(tenant: str) -> int:
        with psycopg.connect(dsn) as conn:
            row = conn.execute(
                "SELECT count(*) FROM spans s JOIN tenants t ON t.id = s.tenant_id WHERE t.name = %s",
                (tenant,),
            ).fetchone()
        assert row is not None
        return int(row[0])

    globex_before = spans_of("globex")
    assert spans_of("acme") > 0
    assert asyncio.run(five_days_on()) > 0
    assert spans_of("acme") == 0
    assert spans_of("globex") == globex_before > 0
    reset = estate.call("PUT", "/api/v1/retention", admin, body={"spans": None})
    assert reset.json()["tenant_override"] is False


async def _pre_role_store(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(cast(Any, migrations._CREATE_LEDGER))
        for migration in migrations.available():
            if migration.name.endswith("roles"):
                break  # the store as it was before token roles existed
            await conn.execute(cast(Any, migration.sql))
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
        tenant = await (
            await conn.execute("INSERT INTO tenants (name) VALUES ('old') RETURNING id")
        ).fetchone()
        assert tenant is not None
        for kind in ("ingest", "rum", "api"):
            await conn.execute(
                "INSERT INTO api_keys (tenant_id, kind, key_hash, key_hint) VALUES (%s, %s, %s, 'x')",
                (tenant[0], kind, os.urandom(32)),
            )
        await migrations.migrate(conn)


def test_tokens_made_before_roles_become_admin(database_factory: Callable[..., str]) -> None:
    dsn = database_factory(empty=True)
    asyncio.run(_pre_role_store(dsn))
    with psycopg.connect(dsn) as conn:
        roles = dict(conn.execute("SELECT kind, role FROM api_keys").fetchall())
    assert roles == {"ingest": None, "rum": None, "api": "admin"}
