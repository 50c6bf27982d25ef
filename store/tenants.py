"""Tenants and their keys.

Each tenant has three kinds of credential, each good for one thing only:

- ``ingest`` keys (``tsi_...``) let agents and SDKs write telemetry;
- ``rum`` keys (``tsr_...``) are public, write-only keys for browser beacons;
- ``api`` tokens (``tsa_...``) read data through the query API.

Keys are 256-bit random strings. Only their SHA-256 digest is stored: a stolen
database gives no working key, and since the keys are random there is nothing to
brute-force, so no salt or slow hash is needed. A presented key is found by its
digest and compared with :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from tierscope.store.errors import NotFound, wrap_errors
from tierscope.store.queries import QUERIES

KINDS = ("ingest", "rum", "api")
PREFIXES = {"ingest": "tsi_", "rum": "tsr_", "api": "tsa_"}
_KEY_FORMAT = re.compile(r"^ts[ira]_[A-Za-z0-9_-]{43}$")
TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def new_key(kind: str) -> str:
    return PREFIXES[kind] + secrets.token_urlsafe(32)


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def well_formed(key: str) -> bool:
    """True if ``key`` has the shape of a tierscope key (checked before any lookup)."""
    return bool(_KEY_FORMAT.match(key))


@dataclass(frozen=True)
class Credentials:
    """What a tenant's clients need; printed once, never stored in the clear."""

    tenant: str
    ingest_key: str | None = None
    rum_key: str | None = None
    api_token: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {
            "tenant": self.tenant,
            "ingest_key": self.ingest_key,
            "rum_key": self.rum_key,
            "api_token": self.api_token,
        }


@dataclass(frozen=True)
class KeyInfo:
    """What a presented key turned out to be."""

    tenant_id: int
    tenant: str
    kind: str
    revoked: bool
    expired: bool

    @property
    def usable(self) -> bool:
        return not (self.revoked or self.expired)


def _field_for(kind: str) -> str:
    return {"ingest": "ingest_key", "rum": "rum_key", "api": "api_token"}[kind]


async def _tenant_id(conn: AsyncConnection, name: str) -> int:
    cur = await conn.execute(QUERIES["get_tenant"], {"name": name})
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no tenant named {name!r}")
    return int(row[0])


async def _add_key(conn: AsyncConnection, tenant_id: int, kind: str) -> str:
    key = new_key(kind)
    await conn.execute(
        QUERIES["insert_key"],
        {"tenant_id": tenant_id, "kind": kind, "key_hash": digest(key), "key_hint": key[:8]},
    )
    return key


@wrap_errors
async def create_tenant(conn: AsyncConnection, name: str) -> Credentials:
    """Create a tenant with one key of each kind.

    Raises:
        ValueError: the name is not a valid tenant name.
        Conflict: a tenant of that name exists.
    """
    if not TENANT_NAME.match(name):
        raise ValueError(
            f"invalid tenant name {name!r}: use 1-63 lower-case letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    async with conn.transaction():
        cur = await conn.execute(QUERIES["create_tenant"], {"name": name})
        row = await cur.fetchone()
        assert row is not None
        keys = {_field_for(kind): await _add_key(conn, int(row[0]), kind) for kind in KINDS}
    return Credentials(tenant=name, **keys)


@wrap_errors
async def rotate(
    conn: AsyncConnection, name: str, kinds: tuple[str, ...] = KINDS, grace: timedelta = timedelta(hours=24)
) -> Credentials:
    """Issue new keys; the old ones keep working for ``grace``, then stop.

    Clients can be moved to the new key while the old one still works.
    """
    async with conn.transaction():
        tenant_id = await _tenant_id(conn, name)
        keys: dict[str, Any] = {}
        for kind in kinds:
            await conn.execute(QUERIES["expire_keys"], {"tenant_id": tenant_id, "kind": kind, "grace": grace})
            keys[_field_for(kind)] = await _add_key(conn, tenant_id, kind)
    return Credentials(tenant=name, **keys)


@wrap_errors
async def revoke(conn: AsyncConnection, name: str, *, key: str | None = None, kind: str | None = None) -> int:
    """Revoke one key, or every key of a kind, now. Returns how many were revoked."""
    tenant_id = await _tenant_id(conn, name)
    if key is not None:
        cur = await conn.execute(QUERIES["revoke_key"], {"tenant_id": tenant_id, "key_hash": digest(key)})
    elif kind is not None:
        cur = await conn.execute(QUERIES["revoke_kind"], {"tenant_id": tenant_id, "kind": kind})
    else:
        raise ValueError("say which key to revoke, or which kind")
    return cur.rowcount


@wrap_errors
async def list_tenants(conn: AsyncConnection) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(QUERIES["list_tenants"])
        return await cur.fetchall()


@wrap_errors
async def lookup(conn: AsyncConnection, key: str) -> KeyInfo | None:
    """What ``key`` is, or None if no such key exists (malformed keys are never looked up)."""
    if not well_formed(key):
        return None
    presented = digest(key)
    cur = await conn.execute(QUERIES["find_key"], {"key_hash": presented})
    row = await cur.fetchone()
    if row is None or not hmac.compare_digest(bytes(row[0]), presented):
        return None
    _, kind, tenant_id, tenant, revoked, expired = row
    return KeyInfo(tenant_id=tenant_id, tenant=tenant, kind=kind, revoked=revoked, expired=expired)
