"""Two tenants on one real collector, each with a bit of everything.

Tenants and their role tokens are made with the real commands (``tierscope
tenant create --json``, ``tierscope tenant token --role``). Each tenant then
gets a trace (real OTLP), a silence (the API, as an editor), naming rules and an
SLO (``tierscope bt apply``, ``tierscope slo apply``), and an alert, an
experience and a script error written the way the evaluator and the RUM
endpoint write them. Every text a tenant stores carries its SECRET marker,
which no request of the other tenant ever contains: if it shows up in an
answer to the other tenant, that is a leak, not an echo.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tierscope.store import alerting as alert_store
from tierscope.testing import otlp
from tierscope.testing.collector import CollectorProcess, tierscope_command


def secret(tenant: str) -> str:
    return f"{tenant}-confidential"


@dataclass
class Tenant:
    name: str
    ingest_key: str
    rum_key: str
    tokens: dict[str, str]  # role -> API token
    tenant_id: int = 0
    ids: dict[str, list[str]] = field(default_factory=dict)  # kind of id -> this tenant's ids
    queries: dict[str, list[str]] = field(default_factory=dict)  # query parameter -> values naming its data

    @property
    def secret(self) -> str:
        return secret(self.name)


@dataclass
class Estate:
    collector: CollectorProcess
    tenants: dict[str, Tenant]

    def call(
        self, method: str, path: str, token: str | None, body: Any = None, params: Any = None
    ) -> httpx.Response:
        """One request as a client sends it: API paths with a bearer token, console
        pages with the sign-in cookie."""
        headers, cookies = {}, {}
        if token is not None:
            if path.startswith("/api/") or not _is_console(path):
                headers["Authorization"] = f"Bearer {token}"
            else:
                cookies["tierscope_token"] = token
        with httpx.Client(base_url=self.collector.url, cookies=cookies, timeout=20.0) as client:
            return client.request(method, path, headers=headers, json=body, params=params)


def _is_console(path: str) -> bool:
    return not path.startswith(("/v1/", "/api/", "/healthz", "/readyz", "/metrics", "/rum.js", "/docs/"))


def cli(collector: CollectorProcess, *args: str) -> str:
    result = subprocess.run(
        [*tierscope_command(), *args],
        env={**os.environ, "TIERSCOPE_DATABASE_URL": str(collector.database_url)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _make_tenant(collector: CollectorProcess, name: str) -> Tenant:
    created = json.loads(cli(collector, "tenant", "create", name, "--json"))
    tokens = {"admin": created["api_token"]}
    for role in ("viewer", "editor"):
        made = json.loads(cli(collector, "tenant", "token", name, "--role", role, "--json"))
        assert made["role"] == role
        tokens[role] = made["api_token"]
    return Tenant(name, created["ingest_key"], created["rum_key"], tokens)


def _seed(estate: Estate, tenant: Tenant, workdir: Path) -> None:
    collector, mark = estate.collector, tenant.secret
    service, bt = f"{tenant.name}-billing", f"{tenant.name} / Post invoice"

    trace_id = os.urandom(16)
    body = otlp.request(
        [otlp.span(trace_id=trace_id, name=f"POST /invoice {mark}", attributes={"note": mark})],
        service=service,
    ).SerializeToString()
    assert otlp.post(collector.url, tenant.ingest_key, body).status_code == 200

    rules = workdir / f"{tenant.name}-rules.yaml"
    rules.write_text(f"transactions:\n  - name: '{bt}'\n    service: {service}\n    route: /invoice\n")
    cli(collector, "bt", "apply", str(rules), "--tenant", tenant.name)
    slos = workdir / f"{tenant.name}-slos.yaml"
    slo_name = f"{tenant.name}-invoices"
    slos.write_text(
        "apiVersion: tierscope/v1\nkind: SLO\n"
        f"metadata: {{name: {slo_name}, displayName: '{mark} invoices'}}\n"
        f"spec: {{service: {service}, bt: '{bt}', objective: availability, target: 99.9%}}\n"
    )
    cli(collector, "slo", "apply", str(slos), "--tenant", tenant.name)

    silence = estate.call(
        "POST",
        "/api/v1/silences",
        tenant.tokens["editor"],
        {"matchers": {"service": service}, "duration": "2h", "comment": mark},
    )
    assert silence.status_code == 201, silence.text

    now = datetime.now(UTC)
    experience_id = os.urandom(16).hex()

    async def write() -> tuple[int, int]:
        async with await psycopg.AsyncConnection.connect(
            str(collector.database_url), autocommit=True
        ) as conn:
            cur = await conn.execute("SELECT id FROM tenants WHERE name = %s", (tenant.name,))
            row = await cur.fetchone()
            assert row is not None
            tenant_id = int(row[0])
            alert_id = await alert_store.insert_alert(
                conn,
                tenant_id,
                {
                    "group_key": f"{tenant.name}-group",
                    "state": "firing",
                    "severity": "critical",
                    "kind": "threshold",
                    "rule": f"{tenant.name}-rule",
                    "title": f"{mark}: invoices slow",
                    "service": service,
                    "bts": [[service, bt]],
                    "tier": "db",
                    "component": "postgresql",
                    "confidence": 0.9,
                    "evidence": {"note": mark},
                    "impact": {"users": 3, "priority": 1.0, "note": mark},
                    "priority": 1.0,
                    "pending_since": now - timedelta(minutes=5),
                    "started_at": now - timedelta(minutes=4),
                    "last_active_at": now,
                },
            )
            await conn.execute(
                "INSERT INTO rum_experiences (tenant_id, id, kind, start_time, page, url, timing, "
                "duration_ms, outcome, service, bt) VALUES (%s, %s, 'page_load', %s, %s, %s, '{}', "
                "1200, 'ok', %s, %s)",
                (
                    tenant_id,
                    experience_id,
                    now - timedelta(minutes=2),
                    f"/{mark}",
                    f"https://x/{mark}",
                    service,
                    bt,
                ),
            )
            return tenant_id, alert_id

    tenant.tenant_id, alert_id = asyncio.run(write())
    keys = estate.call("GET", "/api/v1/keys", tenant.tokens["admin"]).json()["keys"]
    tenant.ids = {
        "trace": [trace_id.hex()],
        "alert": [str(alert_id)],
        "silence": [str(silence.json()["id"])],
        "slo": [slo_name],
        "experience": [experience_id],
        "key": [str(key["id"]) for key in keys],
    }
    tenant.queries = {
        "service": [service],
        "bt": [bt],
        "trace_id": [trace_id.hex()],
        "slo": [slo_name],
        "business_service": [slo_name],
    }


@pytest.fixture(scope="module")
def estate(
    collector_factory: Callable[..., CollectorProcess], tmp_path_factory: pytest.TempPathFactory
) -> Estate:
    collector = collector_factory()
    workdir = tmp_path_factory.mktemp("security")
    estate = Estate(collector, {})
    for name in ("acme", "globex"):
        estate.tenants[name] = _make_tenant(collector, name)
        _seed(estate, estate.tenants[name], workdir)
    return estate
