"""``tierscope up`` as a new user runs it: embedded store, first-start tenant,
the CLI beside it, graceful shutdown that leaves nothing running."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
import pytest

from tierscope.testing import otlp
from tierscope.testing.collector import CollectorProcess, free_port, tierscope_command

KEYS = {"tenant", "ingest_key", "rum_key", "api_token"}


def cli(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TIERSCOPE_")}
    return subprocess.run(
        [*tierscope_command(), *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**full_env, **(env or {})},
        check=False,
    )


def processes_using(path: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if str(path) in cmdline:
            found.append(process)
    return found


def slow_request_in_flight(url: str, key: str, body: bytes) -> socket.socket:
    """Open a request and send only half its body."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    head = (
        f"POST /v1/traces HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-protobuf\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head + body[: len(body) // 2])
    return sock


def sla_report_beside_the_running_platform(
    collector: CollectorProcess, data_dir: Path, tenant: dict[str, str]
) -> None:
    """``tierscope report --data-dir`` shares the running embedded store (issue 9): the
    tenant's processed transactions are in the report, and ``up`` keeps serving."""
    headers = {"Authorization": f"Bearer {tenant['api_token']}"}
    deadline = time.monotonic() + 90  # the span settles (15 s by default), then is processed
    listed: list[dict[str, object]] = []
    while not listed and time.monotonic() < deadline:
        answer = httpx.get(f"{collector.url}/api/v1/transactions", headers=headers, timeout=10)
        assert answer.status_code == 200, answer.text
        listed = answer.json()["transactions"]
        time.sleep(0.5)
    assert listed, "the tenant's span was never processed into a transaction"
    period = datetime.now(UTC).strftime("%Y-%m")
    out = data_dir.parent / "sla.html"
    options = ["--period", period, "--tenant", tenant["tenant"], "--format", "html", "--out", str(out)]
    made = cli(data_dir, "report", *options)
    assert made.returncode == 0, made.stderr
    assert "Traceback" not in made.stderr
    report = out.read_text()
    assert f"<h1>SLA report {period}</h1>" in report
    assert f"Tenant {tenant['tenant']}" in report
    for heading in ("Summary", "Service levels", "Business transactions", "Incidents", "Sites"):
        assert f"<h2>{heading}</h2>" in report, heading
    transactions = report.split("<h2>Business transactions</h2>")[1].split("<h2>")[0]
    for row in listed:
        assert f"<td>{row['service']}</td><td>{row['bt']}</td>" in transactions, row
    assert "No requests in this period." not in transactions
    # The platform went on serving throughout, and still does.
    assert collector.process is not None
    assert collector.process.poll() is None
    assert httpx.get(f"{collector.url}/healthz", timeout=5).status_code == 200
    assert httpx.get(f"{collector.url}/api/v1/transactions", headers=headers, timeout=10).status_code == 200


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "tierscope-data"


def test_first_start_the_cli_beside_it_and_a_clean_stop(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in [k for k in os.environ if k.startswith("TIERSCOPE_")]:
        monkeypatch.delenv(variable)
    collector = CollectorProcess(data_dir, env={"TIERSCOPE_WORKERS": "2"})  # embedded store
    try:
        collector.start()
        credentials_file = data_dir / "credentials.json"
        credentials = json.loads(credentials_file.read_text())
        assert set(credentials) == KEYS
        assert credentials["tenant"] == "default"
        assert stat.S_IMODE(credentials_file.stat().st_mode) == 0o600
        assert str(credentials_file) in collector.log()

        # The CLI shares the running embedded store.
        created = cli(data_dir, "tenant", "create", "acme", "--json")
        assert created.returncode == 0, created.stderr
        acme = json.loads(created.stdout)
        assert set(acme) == KEYS
        assert acme["tenant"] == "acme"
        body = otlp.request([otlp.span()]).SerializeToString()
        assert otlp.post(collector.url, acme["ingest_key"], body).status_code == 200

        listed = cli(data_dir, "tenant", "list", "--json")
        assert {t["name"] for t in json.loads(listed.stdout)} == {"default", "acme"}
        assert cli(data_dir, "tenant", "create", "acme").returncode != 0

        rotated = cli(data_dir, "tenant", "rotate", "acme", "--kind", "ingest", "--grace", "1h", "--json")
        assert rotated.returncode == 0, rotated.stderr
        new_key = json.loads(rotated.stdout)["ingest_key"]
        assert otlp.post(collector.url, new_key, body).status_code == 200

        revoked = cli(data_dir, "tenant", "revoke", "acme", "--kind", "ingest")
        assert revoked.returncode == 0, revoked.stderr
        assert "revoked 2 key(s)" in revoked.stderr
        time.sleep(2.5)  # TIERSCOPE_KEY_CACHE_TTL
        assert otlp.post(collector.url, new_key, body).status_code == 403

        # A manager's SLA report, read from the running store while `up` serves.
        sla_report_beside_the_running_platform(collector, data_dir, acme)

        # SIGTERM with a request half-sent: it finishes and is stored; then all stops.
        trace_id = os.urandom(16)
        in_flight = otlp.request([otlp.span(trace_id=trace_id)]).SerializeToString()
        sock = slow_request_in_flight(collector.url, credentials["ingest_key"], in_flight)
        time.sleep(0.3)
        assert collector.process is not None
        collector.process.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        sock.sendall(in_flight[len(in_flight) // 2 :])
        reply = sock.recv(4096)
        sock.close()
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
        started = time.monotonic()
        code = collector.process.wait(30)
        assert code == 0
        assert time.monotonic() - started < 30
    finally:
        collector.stop()
    assert processes_using(data_dir) == [], "no worker or postgres process is left running"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{collector.url}/healthz", timeout=1)

    # Start again: same cluster, same tenant, the in-flight span is there.
    again = CollectorProcess(data_dir, port=free_port(), env={"TIERSCOPE_WORKERS": "1"})
    try:
        again.start()
        assert json.loads((data_dir / "credentials.json").read_text()) == credentials
        assert otlp.get_trace(again.url, credentials["api_token"], trace_id).status_code == 200
        assert "created tenant" not in again.log().split("tierscope collector")[-1]
    finally:
        again.stop()
    assert processes_using(data_dir) == []

    migrated = cli(data_dir, "db", "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "up to date" in migrated.stderr
    assert processes_using(data_dir) == [], "a CLI command stops the store it started"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("TIERSCOPE_PORT", "eighty", "TIERSCOPE_PORT='eighty'"),
        ("TIERSCOPE_MAX_BODY_SIZE", "huge", "TIERSCOPE_MAX_BODY_SIZE='huge'"),
        ("TIERSCOPE_RETENTION_SPANS", "1d", "must be shorter than TIERSCOPE_RETENTION_SPANS"),
    ],
)
def test_a_bad_setting_stops_start_up_with_a_clear_message(
    data_dir: Path, variable: str, value: str, expected: str
) -> None:
    result = cli(data_dir, "up", env={variable: value})
    assert result.returncode != 0
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert not (data_dir / "postgres").exists(), "nothing was started"


def test_ctrl_c_finishes_in_flight_work_and_stops_everything(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in [k for k in os.environ if k.startswith("TIERSCOPE_")]:
        monkeypatch.delenv(variable)
    collector = CollectorProcess(data_dir, env={"TIERSCOPE_WORKERS": "2"}).start()
    try:
        credentials = collector.credentials()
        trace_id = os.urandom(16)
        body = otlp.request([otlp.span(trace_id=trace_id)]).SerializeToString()
        sock = slow_request_in_flight(collector.url, credentials["ingest_key"], body)
        time.sleep(0.3)
        collector.interrupt()  # the terminal's Ctrl-C reaches every process of the group
        time.sleep(1.0)
        sock.sendall(body[len(body) // 2 :])
        reply = sock.recv(4096)
        sock.close()
        assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
        assert collector.process is not None
        assert collector.process.wait(30) == 0
        assert "tierscope stopped." in collector.log()
    finally:
        collector.stop()
    assert processes_using(data_dir) == []
