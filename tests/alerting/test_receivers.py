"""Real receivers on 127.0.0.1: Prometheus Alertmanager (the Debian package,
through its v2 API) and an SMTP server (aiosmtpd) receive our alerts."""

from __future__ import annotations

import email
import ipaddress
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller

from tierscope.alerting.delivery import Backoff, deliver_due
from tierscope.alerting.evaluator import Evaluator
from tierscope.store import Database

from .conftest import Estate, Fault
from .test_evaluator import SETTINGS, configure, minute

pytestmark = pytest.mark.anyio
LOOPBACK = [ipaddress.ip_network("127.0.0.1/32")]
PACKAGE = "prometheus-alertmanager"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def alertmanager_binary() -> str:
    """The Debian package's binary, installed on first use where apt can (CI runs as root)."""
    found = shutil.which(PACKAGE)
    if found:
        return found
    if shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=600", PACKAGE]
        if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
            subprocess.run(install, env=env, capture_output=True, check=False)
        found = shutil.which(PACKAGE)
        if found:
            return found
    pytest.fail(
        f"these tests need Alertmanager: install the Debian package with 'apt-get install -y {PACKAGE}'"
    )


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = alertmanager_binary()
    folder = tmp_path_factory.mktemp("alertmanager")
    config = folder / "alertmanager.yml"
    config.write_text("route:\n  receiver: nowhere\n  group_wait: 1s\nreceivers:\n  - name: nowhere\n")
    port = free_port()
    log = (folder / "log").open("w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail("Alertmanager did not start:\n" + Path(folder / "log").read_text()[-2000:])
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def alerts_in(url: str) -> list[dict[str, Any]]:
    return list(httpx.get(f"{url}/api/v2/alerts", timeout=5).json())


async def run_incident(estate: Estate, until: int, start_from: int = 1) -> None:
    async with Database(estate.dsn) as database:
        evaluator = Evaluator(database, SETTINGS)
        for n in range(start_from, until):
            await evaluator.cycle(minute(n))
            await deliver_due(
                database, minute(n), Backoff(timedelta(seconds=1), timedelta(seconds=1)), LOOPBACK
            )


async def test_alertmanager_receives_our_alert_and_then_its_resolution(
    estate: Estate, alertmanager: str
) -> None:
    configure(
        estate,
        f"receivers:\n  - name: am\n    alertmanager: {{url: '{alertmanager}'}}\nroutes:\n  - receiver: am\n",
    )
    estate.faults.append(Fault("db", "UPDATE orders", 900, minute(5), minute(12)))
    estate.write_minutes(minute(-60), 80)
    await run_incident(estate, 10)
    ours = [a for a in alerts_in(alertmanager) if a["labels"].get("group_key") == "cause:db:UPDATE orders"]
    assert len(ours) == 1
    (alert,) = ours
    assert alert["labels"]["alertname"] == "baseline-latency"
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["tier"] == "db"
    assert alert["labels"]["component"] == "UPDATE orders"
    assert alert["status"]["state"] == "active"
    assert alert["annotations"]["runbook_url"] == "docs/runbook.md#tier-db"
    assert "POST /checkout" in alert["annotations"]["bts"]
    await run_incident(estate, 23, start_from=10)
    still = [
        a
        for a in alerts_in(alertmanager)
        if a["labels"].get("group_key") == "cause:db:UPDATE orders" and a["status"]["state"] == "active"
    ]
    assert still == []


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[int, Inbox]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, inbox
    finally:
        controller.stop()


async def test_an_smtp_server_receives_the_alert_by_email(estate: Estate, smtp: tuple[int, Inbox]) -> None:
    port, inbox = smtp
    configure(
        estate,
        f"""
receivers:
  - name: mail
    email: {{host: 127.0.0.1, port: {port}, from: alerts@shop.example, to: [oncall@shop.example]}}
routes:
  - receiver: mail
    severity: [critical]
""",
    )
    estate.faults.append(Fault("db", "UPDATE orders", 900, minute(5), minute(12)))
    estate.write_minutes(minute(-60), 80)
    await run_incident(estate, 23)
    firing, resolved = inbox.messages
    assert firing["Subject"].startswith("[FIRING:critical] shop / ")
    assert firing["To"] == "oncall@shop.example"
    body = firing.get_payload()
    assert "Suspected tier: db; component: UPDATE orders" in body
    assert "Runbook: docs/runbook.md#tier-db" in body
    assert resolved["Subject"].startswith("[RESOLVED:critical]")
