"""Switching faults while the estate runs: the fault table, the lock-holding
batch job of ``db_lock``, and the estate's small HTTP control endpoint.

The control endpoint listens on 127.0.0.1 only; its address is written to
``<data-dir>/demo/estate.json``, which is how ``tierscope demo fault`` finds the
running estate from the same ``--data-dir``.

    GET  /faults                 the catalog, with what is on and until when
    POST /faults/<name>?for=300  switch one on for that many seconds
    (both also give the simulated business time, its load factor and, at a
    quiet hour, the real seconds until the business is busy again)
    GET  /stats?since=&until=    what the simulated users saw, per site and action (unix seconds)
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg

from tierscope.demo.faults import CATALOG, read_faults, write_faults
from tierscope.demo.traffic import Clock, Observations

MAX_FAULT_SECONDS = 24 * 3600


class FaultError(ValueError):
    """A fault that does not exist, or a duration out of range."""


class FaultBoard:
    """Switches faults on and records every activation in ``demo_faults``."""

    def __init__(self, path: Path, store_dsn: str, tenant_id: int, crm_dsn: str) -> None:
        self.path = path
        self.store_dsn = store_dsn
        self.tenant_id = tenant_id
        self.crm_dsn = crm_dsn
        self._lock = threading.Lock()
        self._rows: dict[str, int] = {}  # fault -> demo_faults.id of its current activation
        self._stopping = threading.Event()
        self._locker = threading.Thread(target=self._hold_locks, name="demo-db-lock", daemon=True)
        write_faults(path, {})

    def start(self) -> FaultBoard:
        self._locker.start()
        return self

    def active(self) -> dict[str, float]:
        return read_faults(self.path)

    def activate(self, name: str, seconds: float) -> dict[str, Any]:
        fault = CATALOG.get(name)
        if fault is None:
            raise FaultError(f"no fault {name!r}; known: {', '.join(sorted(CATALOG))}")
        if not 1 <= seconds <= MAX_FAULT_SECONDS:
            raise FaultError(f"duration must be between 1 s and {MAX_FAULT_SECONDS} s")
        start = datetime.now(UTC)
        until = start.timestamp() + seconds
        with self._lock:
            active = self.active()
            with psycopg.connect(self.store_dsn, autocommit=True) as conn:
                previous = self._rows.get(name)
                if previous is not None and active.get(name, 0) > start.timestamp():
                    # Switched on again while on: the running activation is cut short here.
                    conn.execute("UPDATE demo_faults SET ended_at = %s WHERE id = %s", (start, previous))
                row = conn.execute(
                    "INSERT INTO demo_faults (tenant_id, fault, tier, service, component, site, affected_bts,"
                    " started_at, ended_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                    (
                        self.tenant_id,
                        fault.name,
                        fault.tier,
                        fault.service,
                        fault.component,
                        fault.site,
                        list(fault.bts),
                        start,
                        datetime.fromtimestamp(until, UTC),
                    ),
                ).fetchone()
            assert row is not None
            self._rows[name] = int(row[0])
            active[name] = until
            write_faults(self.path, active)
        return {"fault": name, "tier": fault.tier, "component": fault.component, "until": until}

    def stop(self) -> None:
        """Faults still on end now: their rows say so, and nothing stays switched on."""
        self._stopping.set()
        now = datetime.now(UTC)
        with self._lock:
            on = [
                self._rows[name]
                for name, until in self.active().items()
                if until > now.timestamp() and name in self._rows
            ]
            if on:
                with psycopg.connect(self.store_dsn, autocommit=True) as conn:
                    conn.execute("UPDATE demo_faults SET ended_at = %s WHERE id = ANY(%s)", (now, on))
            write_faults(self.path, {})
        self._locker.join(5)

    def _hold_locks(self) -> None:
        """The ``db_lock`` fault: a batch job outside the monitored apps that keeps
        an EXCLUSIVE lock on ``leads`` for 0.8 s of every second. Reads go on;
        every INSERT waits."""
        while not self._stopping.wait(0.2):
            if self.active().get("db_lock", 0) <= time.time():
                continue
            try:
                with psycopg.connect(self.crm_dsn) as conn:
                    while self.active().get("db_lock", 0) > time.time() and not self._stopping.is_set():
                        with conn.transaction():
                            conn.execute("LOCK TABLE leads IN EXCLUSIVE MODE")
                            time.sleep(0.8)
                        time.sleep(0.2)
            except psycopg.Error:
                time.sleep(1.0)


class ControlServer:
    """The estate's HTTP control endpoint on 127.0.0.1."""

    def __init__(self, board: FaultBoard, observations: Observations, clock: Clock | None = None) -> None:
        handler = _handler(board, observations, clock or Clock(compress=0))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="demo-control", daemon=True)

    def start(self) -> ControlServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def catalog(active: dict[str, float]) -> list[dict[str, Any]]:
    now = time.time()
    return [
        {
            "fault": f.name,
            "tier": f.tier,
            "service": f.service,
            "component": f.component,
            "site": f.site,
            "affected_bts": list(f.bts),
            "description": f.description,
            "active_until": active[f.name] if active.get(f.name, 0) > now else None,
        }
        for f in CATALOG.values()
    ]


def _handler(board: FaultBoard, observations: Observations, clock: Clock) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            if url.path == "/faults":
                self._reply(200, {"faults": catalog(board.active()), **clock.describe()})
            elif url.path == "/stats":
                try:
                    since = float(query.get("since", ["0"])[0])
                    until = float(query.get("until", ["inf"])[0])
                except ValueError:
                    self._reply(400, {"error": "since and until must be unix seconds"})
                    return
                summary = observations.summary(since, until)
                self._reply(200, {"requests": observations.requests, "sites": summary})
            else:
                self._reply(404, {"error": "not found"})

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            parts = url.path.strip("/").split("/")
            if len(parts) != 2 or parts[0] != "faults":
                self._reply(404, {"error": "not found"})
                return
            try:
                seconds = float(parse_qs(url.query).get("for", ["300"])[0])
                # The business hour goes with it: at a quiet hour an alert may wait for traffic.
                self._reply(200, {**board.activate(parts[1], seconds), **clock.describe()})
            except (FaultError, ValueError) as exc:
                self._reply(422, {"error": str(exc)})

        def log_message(self, *args: Any) -> None:
            pass

    return Handler
