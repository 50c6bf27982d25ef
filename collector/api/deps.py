"""Dependencies shared by the query API routers."""

from __future__ import annotations

from fastapi import HTTPException, Request

from tierscope.collector.auth import AuthError, KeyVerifier
from tierscope.store.tenants import KeyInfo


async def api_tenant(request: Request) -> KeyInfo:
    """The caller's tenant, from an API token; 401/403 otherwise.

    A store outage while checking the token surfaces as StoreUnavailable, which
    the app answers with 503 and Retry-After.
    """
    verifier: KeyVerifier = request.app.state.verifier
    try:
        return await verifier.verify(request.headers.get("authorization"), "api")
    except AuthError as exc:
        headers = {"WWW-Authenticate": 'Bearer realm="tierscope"'} if exc.status == 401 else None
        raise HTTPException(exc.status, str(exc), headers=headers) from None
