"""Run a real ``tierscope up`` in a child process, for tests and benchmarks.

The collector is started exactly as a user starts it (the console script, real
HTTP on 127.0.0.1), pointed at a given store or at its own embedded one, and
stopped with SIGTERM like a service manager would.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tierscope_command() -> list[str]:
    """The installed ``tierscope`` script beside this interpreter, else ``python -m``."""
    script = Path(sys.executable).with_name("tierscope")
    if script.exists():
        return [str(script)]
    found = shutil.which("tierscope")
    if found:
        return [found]
    return [sys.executable, "-c", "from tierscope.cli.main import main; main()"]


class CollectorProcess:
    """``tierscope up`` as a child process.

    Args:
        data_dir: its ``--data-dir`` (credentials.json appears there).
        database_url: a store to use; None starts the embedded PostgreSQL.
        env: extra ``TIERSCOPE_*`` settings.
        cpu: pin the process to these CPUs (``taskset``), for benchmarks.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        database_url: str | None = None,
        env: dict[str, str] | None = None,
        port: int | None = None,
        cpus: str | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "collector.log"
        self.database_url = database_url
        self._env = {**os.environ, **(env or {})}
        self._env.pop("TIERSCOPE_DATABASE_URL", None)
        if database_url:
            self._env["TIERSCOPE_DATABASE_URL"] = database_url
        self._env["TIERSCOPE_LOG_LEVEL"] = self._env.get("TIERSCOPE_LOG_LEVEL", "warning")
        self._cpus = cpus
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> CollectorProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [*tierscope_command(), "up", "--port", str(self.port), "--data-dir", str(self.data_dir)]
        if self._cpus and shutil.which("taskset"):
            command = ["taskset", "-c", self._cpus, *command]
        log = self.log_path.open("ab")
        # A session of its own, like a service or a terminal job: interrupt() can
        # then signal its whole process group, as Ctrl-C in a terminal does.
        self.process = subprocess.Popen(
            command, env=self._env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"tierscope up exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"tierscope up was not ready within {timeout}s:\n{self.log()}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def credentials(self) -> dict[str, Any]:
        return dict(json.loads((self.data_dir / "credentials.json").read_text()))

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by the collector and its workers."""
        parent = psutil.Process(self.pid)
        total = 0.0
        for process in [parent, *parent.children(recursive=True)]:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def rss_bytes(self) -> int:
        """Resident memory of the collector and every process under it: the
        ``tierscope up`` supervisor does not read requests, its uvicorn worker
        children do (and inflate the bodies)."""
        parent = psutil.Process(self.pid)
        total = 0
        for process in [parent, *parent.children(recursive=True)]:
            try:
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait; returns the exit code (SIGKILL after ``timeout``)."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        return code

    def interrupt(self) -> None:
        """Ctrl-C: SIGINT to the collector's whole process group."""
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGINT)

    def kill(self) -> None:
        """SIGKILL: a crash."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def crash(self) -> None:
        """SIGKILL to the whole process group (supervisor and workers): a crash
        of the machine's collector service, nothing gets to clean up."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None

    def __enter__(self) -> CollectorProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class PeakRss:
    """The highest resident memory of a collector's process tree while the
    block runs, sampled every ``interval`` seconds in a thread (memory given
    back before the block ends still counts)::

        with PeakRss(collector) as memory:
            post_something()
        assert memory.growth < limit
    """

    def __init__(self, collector: CollectorProcess, interval: float = 0.01) -> None:
        self.collector = collector
        self.interval = interval
        self.before = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="peak-rss", daemon=True)

    @property
    def growth(self) -> int:
        """Peak minus the memory at the start of the block."""
        return self.peak - self.before

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, self.collector.rss_bytes())
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakRss:
        self.before = self.peak = self.collector.rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.collector.rss_bytes())
