"""A plain Starlette app (no FastAPI): one route with an outbound httpx call."""

import os

import httpx
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route


async def health(request):
    return PlainTextResponse("ok")


async def quote(request):
    async with httpx.AsyncClient() as client:
        status = (await client.get(os.environ["OUTBOUND_URL"])).status_code
    return JSONResponse({"pid": os.getpid(), "outbound": status})


app = Starlette(routes=[Route("/health", health), Route("/quotes/{quote_id:int}", quote)])
