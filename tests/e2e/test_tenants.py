"""Tenants are isolated: the tenant comes from the key only, and one tenant's
token cannot see another's data (RELIABILITY.md T-13, T-14 basics)."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta

import httpx
import psycopg
import pytest

from tierscope.store import tenants
from tierscope.store.tenants import Credentials
from tierscope.testing import otlp
from tierscope.testing.collector import CollectorProcess


def make_tenant(collector: CollectorProcess, name: str) -> Credentials:
    async def create() -> Credentials:
        async with await psycopg.AsyncConnection.connect(collector.database_url, autocommit=True) as conn:
            return await tenants.create_tenant(conn, name)

    return asyncio.run(create())


@pytest.fixture(scope="module")
def two_tenants(collector: CollectorProcess) -> tuple[Credentials, Credentials]:
    return make_tenant(collector, "acme"), make_tenant(collector, "globex")


def send(
    collector: CollectorProcess, key: str | None, service: str, headers: dict[str, str] | None = None
) -> bytes:
    trace_id = os.urandom(16)
    body = otlp.request([otlp.span(trace_id=trace_id)], service=service).SerializeToString()
    response = otlp.post(collector.url, key, body, headers=headers)
    assert response.status_code == 200, response.text
    return trace_id


def test_a_tenant_cannot_read_another_tenants_trace(
    collector: CollectorProcess, two_tenants: tuple[Credentials, Credentials]
) -> None:
    acme, globex = two_tenants
    acme_trace = send(collector, acme.ingest_key, "acme-crm")
    assert acme.api_token
    assert globex.api_token
    assert otlp.get_trace(collector.url, acme.api_token, acme_trace).status_code == 200
    stolen = otlp.get_trace(collector.url, globex.api_token, acme_trace)
    assert stolen.status_code == 404
    missing = otlp.get_trace(collector.url, globex.api_token, os.urandom(16))
    assert stolen.json().keys() == missing.json().keys(), "another tenant's trace looks like no trace"
    listing = httpx.get(
        f"{collector.url}/api/v1/traces",
        params={"since": "1h"},
        headers={"Authorization": f"Bearer {globex.api_token}"},
    ).json()["traces"]
    assert acme_trace.hex() not in {t["trace_id"] for t in listing}


def test_the_tenant_comes_from_the_key_not_from_headers_or_attributes(
    collector: CollectorProcess, two_tenants: tuple[Credentials, Credentials]
) -> None:
    acme, globex = two_tenants
    trace_id = os.urandom(16)
    body = otlp.request(
        [otlp.span(trace_id=trace_id, attributes={"tenant": "globex", "tenant.id": "globex"})],
        service="acme-crm",
        resource={"tenant.id": "globex"},
    ).SerializeToString()
    spoofed = {"X-Scope-OrgID": "globex", "X-Tenant": "globex", "X-Tenant-Id": "2"}
    assert otlp.post(collector.url, acme.ingest_key, body, headers=spoofed).status_code == 200
    assert acme.api_token
    assert globex.api_token
    assert otlp.get_trace(collector.url, globex.api_token, trace_id).status_code == 404
    assert otlp.get_trace(collector.url, acme.api_token, trace_id).status_code == 200
    with psycopg.connect(collector.database_url) as conn:
        row = conn.execute(
            "SELECT t.name FROM spans s JOIN tenants t ON t.id = s.tenant_id WHERE s.trace_id = %s",
            (trace_id,),
        ).fetchone()
    assert row == ("acme",)


def test_keys_are_stored_only_as_digests(
    collector: CollectorProcess, two_tenants: tuple[Credentials, Credentials]
) -> None:
    acme, _ = two_tenants
    with psycopg.connect(collector.database_url) as conn:
        dump = " ".join(str(row) for row in conn.execute("SELECT * FROM api_keys").fetchall())
    for key in (acme.ingest_key, acme.rum_key, acme.api_token):
        assert key
        assert key not in dump
        assert key[4:] not in dump


def test_rotation_keeps_old_and_new_keys_working_until_the_grace_ends(collector: CollectorProcess) -> None:
    old = make_tenant(collector, "initech")

    async def rotate(grace: timedelta) -> Credentials:
        async with await psycopg.AsyncConnection.connect(collector.database_url, autocommit=True) as conn:
            return await tenants.rotate(conn, "initech", ("ingest",), grace)

    new = asyncio.run(rotate(timedelta(hours=1)))
    assert new.ingest_key
    assert new.ingest_key != old.ingest_key
    send(collector, old.ingest_key, "initech-erp")
    send(collector, new.ingest_key, "initech-erp")
    asyncio.run(rotate(timedelta(0)))  # ends the grace of every key but the newest
    response = otlp.post(collector.url, old.ingest_key, b"")
    # The collector trusts a verified key for TIERSCOPE_KEY_CACHE_TTL (2 s).
    deadline = 0
    while response.status_code == 200 and deadline < 30:
        asyncio.run(asyncio.sleep(0.25))
        deadline += 1
        response = otlp.post(collector.url, old.ingest_key, b"")
    assert response.status_code == 403


def test_the_query_api_needs_an_api_token(
    collector: CollectorProcess, two_tenants: tuple[Credentials, Credentials]
) -> None:
    acme, _ = two_tenants
    url = f"{collector.url}/api/v1/traces"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer nonsense"}).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Bearer {acme.ingest_key}"}).status_code == 403
    assert httpx.get(url, headers={"Authorization": f"Bearer {acme.rum_key}"}).status_code == 403
    assert httpx.get(url, headers={"Authorization": f"Bearer {acme.api_token}"}).status_code == 200
