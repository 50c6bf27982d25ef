"""A small ERP API in FastAPI: an async PostgreSQL query (psycopg 3), an outbound
call (httpx) and an asyncio task that joins the request."""

import asyncio
import os

import httpx
import psycopg
from fastapi import FastAPI
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import HTMLResponse, Response, StreamingResponse

DSN = os.environ["DATABASE_URL"]
OUTBOUND = os.environ["OUTBOUND_URL"]

app = FastAPI()
app.add_middleware(GZipMiddleware, minimum_size=20)


@app.get("/health")
async def health():
    return {"ok": True}


async def _audit(order_id: int) -> None:
    async with await psycopg.AsyncConnection.connect(DSN) as conn:
        await conn.execute("SELECT %s::int - 1", (order_id,))


@app.get("/orders/{order_id}")
async def order(order_id: int):
    async with await psycopg.AsyncConnection.connect(DSN) as conn:
        cursor = await conn.execute("SELECT %s::int * 2", (order_id,))
        (value,) = await cursor.fetchone()
    async with httpx.AsyncClient() as client:
        outbound = (await client.get(OUTBOUND)).status_code
    await asyncio.create_task(_audit(order_id))  # a task carries the request's context
    await asyncio.sleep(float(os.environ.get("APP_SLEEP", "0")))
    return {"pid": os.getpid(), "value": value, "outbound": outbound}


PAGE = "<!doctype html><html><head><title>Orders</title></head><body><h1>Orders</h1></body></html>"


@app.get("/page", response_class=HTMLResponse)
async def page():
    return PAGE


@app.get("/page/streamed")
async def streamed():
    async def parts():
        for part in (
            "<!doctype html><html><he",
            "ad><title>Orders</title></he",
            "ad><body>",
            "</body></html>",
        ):
            yield part.encode()

    return StreamingResponse(parts(), media_type="text/html; charset=utf-8")


MISLABELLED = b"<!doctype html><html><head><title>not gzip</title></head></html>"


@app.get("/page/mislabelled")
async def mislabelled():
    # Labelled gzip, but it is not: the agent cannot rewrite it and must not break it.
    return Response(MISLABELLED, media_type="text/html", headers={"Content-Encoding": "gzip"})
