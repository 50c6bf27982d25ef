"""A stand-in for Grafana's HTTP API, and Grafana's SQL macros, for tests.

Grafana cannot be installed here, so ``tierscope dashboards push`` is tested
against this server, which follows the documented contract of the endpoints it
uses (folders, datasources by uid, ``POST /api/dashboards/db``, health) —
status codes, bodies and bearer-token auth — and keeps what it is sent so tests
can inspect it. :func:`expand` turns a panel's SQL into what Grafana's
PostgreSQL datasource sends to the database, so tests run the real queries.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tierscope.testing.collector import free_port


class GrafanaStandIn:
    def __init__(self, token: str) -> None:
        self.token = token
        self.folders: dict[str, dict[str, Any]] = {}
        self.datasources: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}  # uid -> {"dashboard", "folderUid", "version"}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(
            uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="warning")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> GrafanaStandIn:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the Grafana stand-in did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def authorize(request: Request, call_next: Any) -> Any:
            if request.headers.get("authorization") != f"Bearer {self.token}":
                return _error(401, "Unauthorized")
            return await call_next(request)

        @app.get("/api/health")
        async def health() -> dict[str, str]:
            return {"database": "ok", "version": "11.3.0"}

        @app.get("/api/folders/{uid}")
        async def get_folder(uid: str) -> Any:
            return self.folders.get(uid) or _error(404, "folder not found")

        @app.post("/api/folders")
        async def create_folder(request: Request) -> Any:
            body = await request.json()
            if not body.get("title"):
                return _error(400, "folder title cannot be empty")
            uid = body.get("uid") or f"f{len(self.folders)}"
            if uid in self.folders:
                return _error(409, "a folder with the same uid already exists")
            self.folders[uid] = {
                "id": len(self.folders) + 1,
                "uid": uid,
                "title": body["title"],
                "version": 1,
            }
            return self.folders[uid]

        @app.get("/api/datasources/uid/{uid}")
        async def get_datasource(uid: str) -> Any:
            return self.datasources.get(uid) or _error(404, "Data source not found")

        @app.post("/api/datasources")
        async def create_datasource(request: Request) -> Any:
            body = await request.json()
            for required in ("name", "type", "access"):
                if not body.get(required):
                    return _error(400, f"Required field {required} is missing")
            if any(d["name"] == body["name"] for d in self.datasources.values()):
                return _error(409, "data source with the same name already exists")
            uid = body.get("uid") or f"d{len(self.datasources)}"
            stored = {**body, "id": len(self.datasources) + 1, "uid": uid}
            stored.pop("secureJsonData", None)  # Grafana never returns secrets
            self.datasources[uid] = stored
            return {
                "datasource": stored,
                "id": stored["id"],
                "message": "Datasource added",
                "name": body["name"],
            }

        @app.put("/api/datasources/uid/{uid}")
        async def update_datasource(uid: str, request: Request) -> Any:
            if uid not in self.datasources:
                return _error(404, "Data source not found")
            body = await request.json()
            stored = {**body, "id": self.datasources[uid]["id"], "uid": uid}
            stored.pop("secureJsonData", None)
            self.datasources[uid] = stored
            return {
                "datasource": stored,
                "id": stored["id"],
                "message": "Datasource updated",
                "name": body["name"],
            }

        @app.post("/api/dashboards/db")
        async def save_dashboard(request: Request) -> Any:
            body = await request.json()
            board = body.get("dashboard") or {}
            if not board.get("title"):
                return _error(400, "Dashboard title cannot be empty")
            folder = body.get("folderUid")
            if folder and folder not in self.folders:
                return _error(400, "folder not found")
            uid = board.get("uid") or f"b{len(self.dashboards)}"
            existing = self.dashboards.get(uid)
            if existing and not body.get("overwrite") and board.get("version") != existing["version"]:
                return JSONResponse(
                    {
                        "message": "The dashboard has been changed by someone else",
                        "status": "version-mismatch",
                    },
                    status_code=412,
                )
            version = existing["version"] + 1 if existing else 1
            self.dashboards[uid] = {
                "dashboard": {**board, "version": version},
                "folderUid": folder,
                "version": version,
            }
            slug = re.sub(r"[^a-z0-9]+", "-", board["title"].lower()).strip("-")
            return {
                "id": list(self.dashboards).index(uid) + 1,
                "uid": uid,
                "url": f"/d/{uid}/{slug}",
                "status": "success",
                "version": version,
                "slug": slug,
            }

        @app.get("/api/dashboards/uid/{uid}")
        async def get_dashboard(uid: str) -> Any:
            stored = self.dashboards.get(uid)
            if stored is None:
                return _error(404, "Dashboard not found")
            return {"dashboard": stored["dashboard"], "meta": {"folderUid": stored["folderUid"]}}

        return app


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status)


def expand(sql: str, start: datetime, end: datetime, interval: str, variables: Mapping[str, str]) -> str:
    """What Grafana's PostgreSQL datasource makes of a panel's SQL (the macros
    and variable formats tierscope's dashboards use)."""

    def iso(moment: datetime) -> str:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    sql = re.sub(r"\$__timeFilter\(([^)]+)\)", rf"\1 BETWEEN '{iso(start)}' AND '{iso(end)}'", sql)
    sql = sql.replace("$__timeFrom()", f"'{iso(start)}'").replace("$__timeTo()", f"'{iso(end)}'")
    sql = sql.replace("$__interval", interval)
    for name, value in variables.items():
        sql = sql.replace(f"${{{name}:sqlstring}}", "'" + value.replace("'", "''") + "'")
        sql = re.sub(rf"\${name}\b", value, sql)
    if "$" in re.sub(r"'[^']*'", "", sql):
        raise ValueError(f"unexpanded Grafana syntax in: {sql}")
    return sql
