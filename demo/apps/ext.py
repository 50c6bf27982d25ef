"""``ext-services``: a partner's small web service the CRM depends on (credit
check, address verification). Async FastAPI under uvicorn."""

from __future__ import annotations

import asyncio
import hashlib
import random

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tierscope.demo.apps.common import die_with_parent, faults, tag_request

app = FastAPI(title="ext-services", openapi_url=None, docs_url=None, redoc_url=None)
die_with_parent()


@app.middleware("http")
async def _tag(request: Request, call_next):  # type: ignore[no-untyped-def]
    tag_request(request.headers)
    return await call_next(request)


@app.get("/health")
async def health() -> str:
    return "ok"


@app.get("/credit-check")
async def credit_check(company: str = ""):  # type: ignore[no-untyped-def]
    await asyncio.sleep(0.02 + random.random() * 0.03)
    if faults.active("external_down"):
        if random.random() < 0.5:
            return JSONResponse({"error": "service unavailable"}, status_code=503)
        await asyncio.sleep(3.0)  # longer than the CRM waits: a timeout on its side
    grade = hashlib.sha256(company.encode()).digest()[0] % 4
    return {"rating": "ABCD"[grade]}


@app.post("/verify-address")
async def verify_address(request: Request):  # type: ignore[no-untyped-def]
    await asyncio.sleep(0.01 + random.random() * 0.02)
    if faults.active("external_slow"):
        await asyncio.sleep(1.2)
    body = await request.json()
    return {"city": str(body.get("city", ""))[:80], "verified": True}
