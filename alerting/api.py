"""``/api/v1/alerts``, ``/api/v1/silences``, ``/api/v1/alerting/config``.

Every route needs an API token and sees its own tenant only: another tenant's
alert or silence is a 404, the same as one that does not exist.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field

from tierscope.alerting import mute, ssrf, views
from tierscope.alerting.rules import AlertingConfig, ConfigError, effective_rules, from_document, parse
from tierscope.alerting.ssrf import UnsafeAddress
from tierscope.collector.api.deps import api_tenant, iso, parse_time
from tierscope.config import Settings, parse_duration
from tierscope.slo import status
from tierscope.store import Database
from tierscope.store import alerting as store
from tierscope.store.tenants import KeyInfo

router = APIRouter(prefix="/api/v1", tags=["alerting"])
Caller = Annotated[KeyInfo, Depends(api_tenant)]
AlertId = Annotated[int, Path(ge=1, le=2**62)]
SilenceId = Annotated[int, Path(ge=1, le=2**62)]
MAX_CONFIG_BYTES = 256 * 1024


def _database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _config(request: Request, tenant_id: int) -> AlertingConfig:
    async with _database(request).connection() as conn:
        stored = await store.get_config(conn, tenant_id)
    return from_document(stored) if stored else AlertingConfig()


@router.get("/alerts", summary="Alerts, open ones first, ranked by priority")
async def alerts(
    request: Request,
    caller: Caller,
    since: Annotated[
        str | None, Query(max_length=64, description="resolved alerts since (default 24h)")
    ] = None,
    state: Annotated[str | None, Query(pattern="^(pending|firing|acknowledged|resolved)$")] = None,
) -> dict[str, Any]:
    now = datetime.now(UTC)
    try:
        start = parse_time(since, now, now - timedelta(hours=24))
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    config = await _config(request, caller.tenant_id)
    async with _database(request).connection() as conn:
        rows = await store.list_alerts(conn, caller.tenant_id, start)
    base = _settings(request).alert_runbook_url
    shown = [views.view(row, base, config.display(row["severity"])) for row in rows]
    if state is not None:
        shown = [a for a in shown if a["state"] == state]
    return {"alerts": views.rank(shown)}


@router.get("/alerts/{alert_id}", summary="One alert with its evidence and notifications")
async def alert(request: Request, caller: Caller, alert_id: AlertId) -> dict[str, Any]:
    async with _database(request).connection() as conn:
        row = await store.get_alert(conn, caller.tenant_id, alert_id)
        if row is None:
            raise HTTPException(404, "no such alert")
        sent = await store.list_notifications(conn, caller.tenant_id, alert_id)
    shown = views.view(row, _settings(request).alert_runbook_url)
    shown["notifications"] = [
        {**n, "delivered_at": iso(n["delivered_at"]) if n["delivered_at"] else None} for n in sent
    ]
    return shown


class Acknowledgement(BaseModel):
    by: str = Field(default="", max_length=200)


@router.post("/alerts/{alert_id}/ack", summary="Acknowledge a firing alert")
async def acknowledge(
    request: Request, caller: Caller, alert_id: AlertId, body: Acknowledgement | None = None
) -> dict[str, Any]:
    async with _database(request).connection() as conn:
        done = await store.acknowledge(
            conn, caller.tenant_id, alert_id, (body or Acknowledgement()).by, datetime.now(UTC)
        )
        row = await store.get_alert(conn, caller.tenant_id, alert_id)
    if row is None:
        raise HTTPException(404, "no such alert")
    if not done and row["state"] != "acknowledged":
        raise HTTPException(409, f"the alert is {row['state']}; only a firing alert can be acknowledged")
    return views.view(row, _settings(request).alert_runbook_url)


class SilenceIn(BaseModel):
    matchers: dict[str, str] = Field(min_length=1)
    starts_at: str | None = Field(default=None, max_length=64)
    ends_at: str | None = Field(default=None, max_length=64)
    duration: str | None = Field(default=None, max_length=32, description="instead of ends_at, e.g. 2h")
    comment: str = Field(default="", max_length=1000)
    created_by: str = Field(default="", max_length=200)
    kind: str = Field(default="silence", pattern="^(silence|maintenance)$")


def _silence_row(body: SilenceIn) -> dict[str, Any]:
    now = datetime.now(UTC)
    try:
        mute.check_matchers(body.matchers)
        starts = parse_time(body.starts_at, now, now)
        if body.ends_at:
            ends = parse_time(body.ends_at, now, now)
        else:
            ends = starts + parse_duration(body.duration or "1h")
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    if ends <= starts:
        raise HTTPException(400, "a silence must end after it starts")
    return {
        "kind": body.kind,
        "matchers": body.matchers,
        "starts_at": starts,
        "ends_at": ends,
        "comment": body.comment,
        "created_by": body.created_by,
    }


def _silence_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **row,
        "starts_at": iso(row["starts_at"]),
        "ends_at": iso(row["ends_at"]),
        "created_at": iso(row["created_at"]),
    }


@router.get("/silences", summary="Silences and maintenance windows that have not ended")
async def silences(request: Request, caller: Caller) -> dict[str, Any]:
    async with _database(request).connection() as conn:
        rows = await store.list_silences(conn, caller.tenant_id, datetime.now(UTC))
    return {"silences": [_silence_view(r) for r in rows]}


@router.post("/silences", status_code=201, summary="Mute matching alerts for a while")
async def create_silence(request: Request, caller: Caller, body: SilenceIn) -> dict[str, Any]:
    async with _database(request).connection() as conn:
        silence_id = await store.create_silence(conn, caller.tenant_id, _silence_row(body))
        row = await store.get_silence(conn, caller.tenant_id, silence_id)
    assert row is not None
    return _silence_view(row)


@router.get("/silences/{silence_id}", summary="One silence")
async def get_silence(request: Request, caller: Caller, silence_id: SilenceId) -> dict[str, Any]:
    async with _database(request).connection() as conn:
        row = await store.get_silence(conn, caller.tenant_id, silence_id)
    if row is None:
        raise HTTPException(404, "no such silence")
    return _silence_view(row)


@router.put("/silences/{silence_id}", summary="Change a silence")
async def update_silence(request: Request, caller: Caller, silence_id: SilenceId, body: SilenceIn) -> dict:
    async with _database(request).connection() as conn:
        if not await store.update_silence(conn, caller.tenant_id, silence_id, _silence_row(body)):
            raise HTTPException(404, "no such silence")
        row = await store.get_silence(conn, caller.tenant_id, silence_id)
    assert row is not None
    return _silence_view(row)


@router.delete("/silences/{silence_id}", status_code=204, summary="End a silence now")
async def delete_silence(request: Request, caller: Caller, silence_id: SilenceId) -> None:
    async with _database(request).connection() as conn:
        if not await store.delete_silence(conn, caller.tenant_id, silence_id):
            raise HTTPException(404, "no such silence")


def check_receivers(config: AlertingConfig, settings: Settings) -> None:
    """SSRF check of every receiver address, at save time (and again at send time)."""
    try:
        ssrf.check_receivers(config.receivers, list(settings.alert_allowed_networks))
    except UnsafeAddress as exc:
        raise HTTPException(422, str(exc)) from None


@router.put("/alerting/config", summary="Replace the tenant's alert rules, receivers and routes (YAML)")
async def put_config(
    request: Request, caller: Caller, text: Annotated[str, Body(media_type="application/yaml")]
) -> dict[str, Any]:
    if len(text.encode()) > MAX_CONFIG_BYTES:
        raise HTTPException(413, "the alerting document may be at most 256 KiB")
    try:
        config = parse(text)
    except ConfigError as exc:
        raise HTTPException(422, str(exc)) from None
    check_receivers(config, _settings(request))
    async with _database(request).connection() as conn:
        # Stored as written (checked above): durations stay "2m", not ISO 8601.
        await store.save_config(conn, caller.tenant_id, yaml.safe_load(text) or {}, text)
    return await get_config(request, caller)


@router.get("/alerting/config", summary="The tenant's alerting document and the rules in effect")
async def get_config(request: Request, caller: Caller) -> dict[str, Any]:
    config = await _config(request, caller.tenant_id)
    async with _database(request).connection() as conn:
        names = sorted(o.name for o in await status.objectives(conn, caller.tenant_id))
    document = config.model_dump(mode="json", by_alias=True)
    for receiver in document["receivers"]:  # secrets stay in the store
        for kind in ("webhook", "email"):
            if receiver.get(kind):
                for secret in ("secret", "password"):
                    if receiver[kind].get(secret):
                        receiver[kind][secret] = "***"
    rules = [r.model_dump(mode="json", by_alias=True) for r in effective_rules(config, names)]
    return {"config": document, "rules": rules}
