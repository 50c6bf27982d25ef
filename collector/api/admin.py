"""``/api/v1/tenant``, ``/keys``, ``/retention``, ``/purge``: a tenant's own administration.

Every endpoint here needs an **admin** token and acts on the caller's tenant
only: there is no tenant name or id in any path or body, so there is nothing
to swap. Another tenant's key id is "not found", like an id that never existed.
Creating tenants stays with the operator (``tierscope tenant create``): a
token belongs to one tenant and cannot reach outside it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from tierscope.collector.api.deps import api_admin, iso, parse_time
from tierscope.config import Settings, parse_duration
from tierscope.store import Database
from tierscope.store import retention as retention_store
from tierscope.store import tenants as tenant_store
from tierscope.store.tenants import KeyInfo

router = APIRouter(prefix="/api/v1", tags=["administration"])
Admin = Annotated[KeyInfo, Depends(api_admin)]
KeyId = Annotated[int, Path(ge=1, le=2**62)]


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str = Field(pattern="^(ingest|rum|api)$", description="ingest, rum or api")
    role: str | None = Field(
        default=None, pattern="^(viewer|editor|admin)$", description="for api tokens (default viewer)"
    )


class RetentionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    spans: str | None = Field(
        max_length=32, description="how long to keep this tenant's spans and traces, e.g. 3d; null: default"
    )


class PurgeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    before: str = Field(
        max_length=64, description="delete telemetry older than this: ISO 8601, unix seconds, or 7d (ago)"
    )


def _database(request: Request) -> Database:
    return request.app.state.database


def _key_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "kind": row["kind"],
        "role": row["role"],
        "hint": row["key_hint"],
        "created_at": iso(row["created_at"]),
        "expires_at": iso(row["expires_at"]) if row["expires_at"] else None,
        "revoked_at": iso(row["revoked_at"]) if row["revoked_at"] else None,
        "live": row["live"],
    }


@router.get("/tenant", summary="The caller's tenant, its live keys and retention (admin)")
async def tenant(request: Request, caller: Admin) -> dict[str, Any]:
    async with _database(request).connection() as conn:
        keys = await tenant_store.list_keys(conn, caller.tenant_id)
        keep = await retention_store.get(conn, caller.tenant_id)
    live = [row for row in keys if row["live"]]
    return {
        "tenant": caller.tenant,
        "live_keys": {kind: sum(1 for row in live if row["kind"] == kind) for kind in tenant_store.KINDS},
        "retention": _retention_view(request.app.state.settings, keep),
    }


@router.get("/keys", summary="The tenant's keys, without their secrets (admin)")
async def keys(request: Request, caller: Admin) -> dict[str, Any]:
    async with _database(request).connection() as conn:
        rows = await tenant_store.list_keys(conn, caller.tenant_id)
    return {"keys": [_key_view(row) for row in rows]}


@router.post("/keys", status_code=201, summary="Issue a key; its secret is shown only in this answer (admin)")
async def create_key(request: Request, caller: Admin, body: KeyIn) -> dict[str, Any]:
    role = body.role or ("viewer" if body.kind == "api" else None)
    if body.kind != "api" and body.role is not None:
        raise HTTPException(400, f"role: only api tokens have a role; leave it out for a {body.kind} key")
    async with _database(request).connection() as conn:
        key, key_id = await tenant_store.add_key(conn, caller.tenant_id, body.kind, role)
    return {"id": key_id, "kind": body.kind, "role": role, "key": key}


@router.delete("/keys/{key_id}", status_code=204, summary="Revoke one of the tenant's keys now (admin)")
async def revoke_key(request: Request, caller: Admin, key_id: KeyId) -> Response:
    async with _database(request).connection() as conn:
        revoked = await tenant_store.revoke_key_id(conn, caller.tenant_id, key_id)
    if not revoked:
        raise HTTPException(404, f"key {key_id} not found (or already revoked)")
    return Response(status_code=204)


def _retention_view(settings: Settings, keep: timedelta | None) -> dict[str, Any]:
    default = settings.retention_spans
    return {
        "spans_seconds": int((keep or default).total_seconds()),
        "default_spans_seconds": int(default.total_seconds()),
        "tenant_override": keep is not None,
    }


@router.get("/retention", summary="How long the tenant's spans are kept (admin)")
async def get_retention(request: Request, caller: Admin) -> dict[str, Any]:
    async with _database(request).connection() as conn:
        keep = await retention_store.get(conn, caller.tenant_id)
    return _retention_view(request.app.state.settings, keep)


@router.put("/retention", summary="Keep the tenant's spans for less than the default (admin)")
async def put_retention(request: Request, caller: Admin, body: RetentionIn) -> dict[str, Any]:
    settings: Settings = request.app.state.settings
    keep: timedelta | None = None
    if body.spans is not None:
        try:
            keep = parse_duration(body.spans)
        except ValueError as exc:
            raise HTTPException(400, f"spans: {exc}") from None
        if not settings.span_max_age < keep <= settings.retention_spans:
            raise HTTPException(
                400,
                f"spans: {body.spans} must be longer than the span age limit ({settings.span_max_age}) "
                f"and at most the collector's retention ({settings.retention_spans})",
            )
    async with _database(request).connection() as conn:
        await retention_store.set_spans(conn, caller.tenant_id, keep)
    return _retention_view(settings, keep)


@router.post("/purge", summary="Delete the tenant's telemetry older than a moment, now (admin)")
async def purge(request: Request, caller: Admin, body: PurgeIn) -> dict[str, Any]:
    now = datetime.now(UTC)
    try:
        before = parse_time(body.before, now, now)
    except ValueError as exc:
        raise HTTPException(400, f"before: {exc}") from None
    async with _database(request).connection() as conn:
        deleted = await retention_store.purge(conn, caller.tenant_id, before)
    return {"before": iso(before), "deleted": deleted}
