"""Who is calling: the tenant comes from the key, and from nothing else.

A key is presented as ``Authorization: Bearer <key>``. Each kind of key opens
one door only (ingest keys write spans, RUM keys write beacons, API tokens use
the query API), and an API token only within its role (viewer, editor, admin;
see :mod:`tierscope.store.tenants`). Verified answers are
cached for a short time (``TIERSCOPE_KEY_CACHE_TTL``, 2 s by default) so a busy
collector does not ask the store on every request; a revocation therefore
takes effect within that time. Headers or body fields that name a tenant are
ignored.
"""

from __future__ import annotations

import time

from tierscope.store import Database
from tierscope.store import tenants as tenant_store
from tierscope.store.tenants import KeyInfo

_MAX_CACHED = 10_000


class AuthError(Exception):
    """The caller may not do this. ``status`` is 401 (who are you?) or 403 (not allowed)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class KeyVerifier:
    def __init__(self, database: Database, ttl_seconds: float) -> None:
        self._database = database
        self._ttl = ttl_seconds
        self._cache: dict[str, tuple[float, KeyInfo | None]] = {}

    async def verify(self, authorization: str | None, kind: str, role: str | None = None) -> KeyInfo:
        """The key's tenant, if it is a live key of ``kind`` (whose role includes ``role``).

        Raises:
            AuthError: 401 for a missing, malformed or unknown key; 403 for a key
                that is revoked, expired, of another kind, or of too small a role.
            StoreUnavailable: the store could not be asked (the caller answers 503).
        """
        key = bearer(authorization)
        if key is None:
            raise AuthError(401, "missing key: send 'Authorization: Bearer <key>'")
        if not tenant_store.well_formed(key):
            raise AuthError(401, "malformed key: tierscope keys look like tsi_..., tsr_... or tsa_...")
        info = await self._lookup(key)
        if info is None:
            raise AuthError(401, "unknown key")
        if info.revoked:
            raise AuthError(403, "this key has been revoked")
        if info.expired:
            raise AuthError(403, "this key has expired (it was rotated); use the tenant's new key")
        if info.kind != kind:
            raise AuthError(403, f"a {info.kind} key cannot be used here; this needs a {kind} key")
        if role is not None and not info.can(role):
            raise AuthError(
                403, f"this token's role is {info.role or 'none'}; this needs a token with the {role} role"
            )
        return info

    async def _lookup(self, key: str) -> KeyInfo | None:
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self._database.connection(bounded=True) as conn:
            info = await tenant_store.lookup(conn, key)
        if len(self._cache) >= _MAX_CACHED:
            # Evict the oldest entry, not everything: a flood of unknown keys must
            # not push the live keys out all at once.
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = (now + self._ttl, info)
        return info
