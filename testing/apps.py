"""Running instrumented applications for tests: a process under
``tierscope-agent run``, a small outbound HTTP service on 127.0.0.1, and reading
back what the collector stored of a request (via ``Server-Timing``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from tierscope.testing.collector import CollectorProcess

AGENT = str(Path(sys.executable).with_name("tierscope-agent"))


class Outbound:
    """A small HTTP service on 127.0.0.1 that test apps call (the ``external`` tier)."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                outer.hits += 1
                body = b'{"credit":"ok"}'
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/credit-check"
        self.peer = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class AppProcess:
    """A command run under ``tierscope-agent run --`` (in ``cwd``), logging to a file."""

    def __init__(
        self,
        command: list[str],
        env: dict[str, str],
        log: Path,
        port: int | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.command = command
        self.cwd = cwd
        self.env = env
        self.log_path = log
        self.port = port
        self.url = f"http://127.0.0.1:{port}" if port else ""
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> AppProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [AGENT, "run", "--", *self.command],
            cwd=self.cwd,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        if self.port is not None:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.command} exited:\n{self.log()}")
                try:
                    if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            raise TimeoutError(f"{self.command} did not answer:\n{self.log()}")
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-12000:]
        except OSError:
            return ""

    def wait(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0, group: bool = False) -> int:
        """Stop as a service manager would (SIGTERM), or like Ctrl-C (SIGINT to the group)."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            if group:
                os.killpg(self.process.pid, sig)
            else:
                self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._report_hang()
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # stragglers of the group, if any
        except ProcessLookupError:
            pass
        code = self.process.returncode
        self.process = None
        return code

    def _report_hang(self) -> None:
        """A process that did not stop in time: what each of its group was doing goes
        into the log (the processes run with PYTHONFAULTHANDLER, so SIGABRT makes each
        Python process print every thread's stack before it dies)."""
        assert self.process is not None
        with self.log_path.open("a") as log:
            log.write(f"\n--- did not stop in time; the process group {self.process.pid}:\n")
            log.flush()
            subprocess.run(
                ["ps", "-o", "pid,ppid,stat,wchan:24,etime,args", "-g", str(self.process.pid)],
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
        try:
            os.killpg(self.process.pid, signal.SIGABRT)
        except ProcessLookupError:
            return
        time.sleep(2)  # for the stacks to be written


def fetch_trace(collector: CollectorProcess, trace_id: str, spans: int, timeout: float = 20.0) -> list[dict]:
    """The stored spans of a trace, once at least ``spans`` of them have arrived."""
    token = collector.credentials()["api_token"]
    deadline = time.monotonic() + timeout
    found: list[dict] = []
    while time.monotonic() < deadline:
        response = httpx.get(
            f"{collector.url}/api/v1/traces/{trace_id}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        if response.status_code == 200:
            found = response.json()["spans"]
            if len(found) >= spans:
                return found
        time.sleep(0.2)
    raise AssertionError(f"trace {trace_id}: {len(found)} spans arrived, {spans} expected: {found}")


def recent_traces(collector: CollectorProcess, service: str) -> list[dict]:
    token = collector.credentials()["api_token"]
    response = httpx.get(
        f"{collector.url}/api/v1/traces",
        params={"service": service, "since": "30m", "limit": 1000},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return list(response.json()["traces"])


def server_timing(response: httpx.Response) -> tuple[str, str]:
    """(trace id, span id) from a response's ``Server-Timing: traceparent;desc=...``."""
    header = response.headers.get("server-timing", "")
    assert 'traceparent;desc="00-' in header, f"no Server-Timing traceparent in {dict(response.headers)}"
    value = header.split('traceparent;desc="', 1)[1].split('"', 1)[0]
    _, trace_id, span_id, flags = value.split("-")
    assert flags == "01"
    return trace_id, span_id


def check_whole_trace(spans: list[dict], *, root_span_id: str, outbound_peer: str) -> dict[str, list[dict]]:
    """One request's trace: one root (the server span named in Server-Timing), every
    parent present, and the tiers a user expects. Returns the spans by tier."""
    ids = {span["span_id"] for span in spans}
    roots = [span for span in spans if span["parent_span_id"] is None]
    assert [root["span_id"] for root in roots] == [root_span_id], spans
    root = roots[0]
    assert root["kind"] == "server", root
    assert root["tier"] == "app", root
    for span in spans:
        assert span["parent_span_id"] is None or span["parent_span_id"] in ids, span
    by_tier: dict[str, list[dict]] = {}
    for span in spans:
        by_tier.setdefault(span["tier"], []).append(span)
    assert by_tier.get("db"), spans
    assert all(span["component"].startswith("SELECT") for span in by_tier["db"]), by_tier["db"]
    external = [span for span in by_tier.get("external", []) if span["kind"] == "client"]
    assert [span["component"] for span in external] == [outbound_peer], spans
    servers = [span for span in spans if span["kind"] == "server"]
    assert len(servers) == 1, servers  # no double instrumentation
    return by_tier
