"""Per fault of the demo estate's catalog: from the fault's start to the
notification a real webhook receiver on 127.0.0.1 got, and whether the alert
named the right tier and component. Imported by ``bench/alerting.py``.

A ``tierscope demo`` of its own (fresh store) gets the demo's alert rules plus
a webhook receiver; once its transactions have the recent minutes they are
judged against, the faults are switched on in the two phases of
``tests/demo/test_alerts.py`` (faults on different transactions at once).
Every notification before the first fault is a false alarm (the warm-up
included). Two paces:

- ``flat`` (the default, as the demo tests): flat load of busy users (0.6 s of
  think time), alerting judged every 5 s after 15 s of delay;
- ``make-run``: exactly what ``make run`` starts — 2 s of think time, the
  business day compressed 24 times (quiet hours have a tenth of the traffic),
  alerting every 10 s after 30 s of delay — so a fault a user switches on in
  ``make run`` is measured as they would see it.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import psycopg
import yaml

from tierscope.demo import scoring
from tierscope.testing.collector import free_port, tierscope_command

# Faults of one phase touch different transactions; db_lock and external_slow
# (both in Create lead) are apart, and external_down, whose failures burn an SLO
# of four CRM transactions, comes after external_slow rather than before it.
PHASES = [
    ["db_slow", "external_slow", "worker_backlog", "app_cpu", "wan_latency"],
    ["db_lock", "external_down", "error_spike", "browser_slow"],
]
FAULT_SECONDS = 150
ENV = {"TIERSCOPE_LOG_LEVEL": "warning", "TIERSCOPE_ALERT_ALLOWED_NETWORKS": "127.0.0.1/32"}
PACES: dict[str, tuple[dict[str, str], list[str]]] = {
    "flat": (
        {
            "TIERSCOPE_WORKERS": "1",
            "TIERSCOPE_SETTLE_DELAY": "5s",
            "TIERSCOPE_ALERT_DELAY": "15s",
            "TIERSCOPE_ALERT_INTERVAL": "5s",
        },
        ["--users", "12", "--think", "0.6", "--compress", "0"],
    ),
    "make-run": ({}, []),  # tierscope demo's own defaults
}


class Receiver:
    """A webhook receiver on 127.0.0.1: (arrival time, event, alert) of each POST."""

    def __init__(self) -> None:
        self.received: list[tuple[float, str, dict[str, Any]]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
                receiver.received.append((time.time(), body["event"], body["alert"]))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _rules(receiver: Receiver) -> str:
    document = yaml.safe_load(resources.files("tierscope.demo").joinpath("alerting.yaml").read_text())
    document["receivers"] = [{"name": "bench", "webhook": {"url": receiver.url}}]
    document["routes"] = [{"receiver": "bench"}]
    return yaml.safe_dump(document)


def run(log: Any, pace: str = "flat") -> dict[str, Any]:
    """Run the estate and its faults; per fault figures and the false alarms."""
    root = Path(tempfile.mkdtemp(prefix="tierscope-bench-demo-"))
    data, port = root / "data", free_port()
    receiver = Receiver()
    settings, options = PACES[pace]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERSCOPE_")} | ENV | settings
    command = [*tierscope_command(), "demo", "--data-dir", str(data), "--port", str(port)]
    command += [*options, "--seed", "7", "--minutes", "30"]
    with (root / "demo.log").open("ab") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        return {"pace": pace, **_campaign(data, f"http://127.0.0.1:{port}", receiver, log)}
    finally:
        receiver.stop()
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        shutil.rmtree(root, ignore_errors=True)


def _store(data: Path) -> psycopg.Connection:
    access = json.loads((data / "postgres.json").read_text())
    return psycopg.connect(
        host="127.0.0.1",
        port=access["port"],
        user=access["user"],
        password=access["password"],
        dbname="tierscope",
        autocommit=True,
    )


def _campaign(data: Path, url: str, receiver: Receiver, log: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 180
    while True:
        try:
            up = (data / "demo" / "estate.json").exists()
            if up and httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("tierscope demo did not start")
        time.sleep(0.5)
    state = json.loads((data / "demo" / "estate.json").read_text())
    token = json.loads((data / "credentials.json").read_text())["api_token"]
    applied = httpx.put(
        f"{url}/api/v1/alerting/config",
        content=_rules(receiver),
        headers={"Authorization": f"Bearer {token}", "content-type": "application/yaml"},
        timeout=30,
    )
    applied.raise_for_status()
    log("estate up; waiting for the recent minutes new transactions are judged against (about 6 min)")
    while True:
        with _store(data) as conn:
            (first_minute,) = conn.execute(
                "SELECT min(bucket) FROM bt_rollups WHERE resolution = 'minute' AND calls > 0"
            ).fetchone()
        if first_minute is not None and (datetime.now(UTC) - first_minute).total_seconds() > 5 * 60 + 30:
            break
        time.sleep(5)
    time.sleep(60)
    quiet = [a["title"] for _, _, a in receiver.received]  # the warm-up included
    quiet_seconds = time.time() - first_minute.timestamp()
    for phase in PHASES:
        log(f"faults on: {', '.join(phase)}")
        for name in phase:
            httpx.post(f"{state['control_url']}/faults/{name}", params={"for": FAULT_SECONDS}, timeout=30)
        time.sleep(FAULT_SECONDS)
    with _store(data) as conn:
        keys = ("fault", "tier", "service", "component", "site", "bts", "started_at", "ended_at")
        faults = [
            dict(zip(keys, row, strict=True))
            for row in conn.execute(
                "SELECT fault, tier, service, component, site, affected_bts, started_at, ended_at"
                " FROM demo_faults ORDER BY id"
            ).fetchall()
        ]
        instances = scoring.read_instances(conn)
        operations = {fault["fault"]: scoring.read_operations(conn, fault) for fault in faults}
        (experiences,) = conn.execute("SELECT count(*) FROM rum_experiences").fetchone()
    figures = {}
    for fault in faults:
        start = fault["started_at"].timestamp()
        notified = [
            (at, alert)
            for at, event, alert in receiver.received
            if event == "firing"
            and start <= at <= start + FAULT_SECONDS
            and scoring.covers(fault, alert)
            # A fault without transactions (the WAN) is only answered by its own tier.
            and (fault["bts"] or alert["tier"] == fault["tier"])
        ]
        ran = operations[fault["fault"]]
        good = [(at, a) for at, a in notified if scoring.right(fault, a, state["apps"], instances, ran)]
        # Only an alert that names the fault's tier and component answers it; another
        # one covering its transactions (a neighbour fault's alert) is listed apart.
        first = good[0] if good else None
        figures[fault["fault"]] = {
            "tier": fault["tier"],
            "to_notification_s": round(first[0] - start, 1) if first else None,
            "severity": first[1]["severity"] if first else None,
            "tier_right": bool(first) and first[1]["tier"] == fault["tier"],
            "component_right": bool(first)
            and scoring.names_component(fault, first[1]["component"], state["apps"], instances, ran),
            "alert": first[1]["title"] if first else None,
            "other_alerts": [a["title"] for _, a in notified if first is None or a is not first[1]][:3],
        }
    # A fault of a component already alerting joins its incident: no second page
    # (the alert test counts it when the alert newly covers the fault's transaction).
    return {
        "faults": figures,
        "false_alarms_fault_free": quiet,
        "fault_free_seconds": round(quiet_seconds),
        "browser_users": experiences > 0,
    }
