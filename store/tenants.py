"""Tenants and their keys.

Each tenant has three kinds of credential, each good for one thing only:

- ``ingest`` keys (``tsi_...``) let agents and SDKs write telemetry;
- ``rum`` keys (``tsr_...``) are public, write-only keys for browser beacons;
- ``api`` tokens (``tsa_...``) use the query API, within a role: a ``viewer``
  reads, an ``editor`` also writes configuration (naming rules, SLOs, alert
  rules, silences, acknowledgements), an ``admin`` also manages the tenant's
  keys, its retention and purges. ``tenant create`` issues an admin token.

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
ROLES = ("viewer", "editor", "admin")  # each can do what the ones before it can
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
    role: str | None = None  # API tokens only
    key_id: int | None = None

    @property
    def usable(self) -> bool:
        return not (self.revoked or self.expired)

    def can(self, role: str) -> bool:
        """True if this is an API token whose role includes ``role``."""
        return self.role in ROLES and ROLES.index(self.role) >= ROLES.index(role)


def _field_for(kind: str) -> str:
    return {"ingest": "ingest_key", "rum": "rum_key", "api": "api_token"}[kind]


async def _tenant_id(conn: AsyncConnection, name: str) -> int:
    cur = await conn.execute(QUERIES["get_tenant"], {"name": name})
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no tenant named {name!r}")
    return int(row[0])


def _role_for(kind: str, role: str | None) -> str | None:
    if kind != "api":
        if role is not None:
            raise ValueError(f"only API tokens have a role; a {kind} key has none")
        return None
    role = role or "admin"
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    return role


async def _add_key(conn: AsyncConnection, tenant_id: int, kind: str, role: str | None = None) -> str:
    key, _ = await add_key(conn, tenant_id, kind, role)
    return key


@wrap_errors
async def add_key(
    conn: AsyncConnection, tenant_id: int, kind: str, role: str | None = None
) -> tuple[str, int]:
    """A new key of ``kind`` (and ``role``, for API tokens; admin by default) and its id.

    Raises:
        ValueError: an unknown kind or role, or a role for a key that has none.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown key kind {kind!r}: use one of {', '.join(KINDS)}")
    role = _role_for(kind, role)
    key = new_key(kind)
    cur = await conn.execute(
        QUERIES["insert_key"],
        {"tenant_id": tenant_id, "kind": kind, "key_hash": digest(key), "key_hint": key[:8], "role": role},
    )
    row = await cur.fetchone()
    assert row is not None
    return key, int(row[0])


@wrap_errors
async def create_token(conn: AsyncConnection, name: str, role: str) -> str:
    """A new API token of tenant ``name`` with ``role``; shown once, stored as a digest."""
    async with conn.transaction():
        return await _add_key(conn, await _tenant_id(conn, name), "api", _role_for("api", role))


@wrap_errors
async def list_keys(conn: AsyncConnection, tenant_id: int) -> list[dict[str, Any]]:
    """The tenant's keys (live, expired and revoked), without their digests."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(QUERIES["list_keys"], {"tenant_id": tenant_id})
        return await cur.fetchall()


@wrap_errors
async def revoke_key_id(conn: AsyncConnection, tenant_id: int, key_id: int) -> bool:
    """Revoke the tenant's key ``key_id`` now; False if the tenant has no such live key."""
    cur = await conn.execute(QUERIES["revoke_key_id"], {"tenant_id": tenant_id, "key_id": key_id})
    return await cur.fetchone() is not None


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

    Clients can be moved to the new key while the old one still works. For API
    tokens this replaces the admin tokens; viewer and editor tokens made with
    :func:`create_token` are revoked one by one.
    """
    async with conn.transaction():
        tenant_id = await _tenant_id(conn, name)
        keys: dict[str, Any] = {}
        for kind in kinds:
            role = _role_for(kind, None)
            await conn.execute(
                QUERIES["expire_keys"], {"tenant_id": tenant_id, "kind": kind, "grace": grace, "role": role}
            )
            keys[_field_for(kind)] = await _add_key(conn, tenant_id, kind, role)
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
    _, kind, tenant_id, tenant, revoked, expired, role, key_id = row
    return KeyInfo(
        tenant_id=tenant_id,
        tenant=tenant,
        kind=kind,
        revoked=revoked,
        expired=expired,
        role=role,
        key_id=key_id,
    )
