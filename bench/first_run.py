"""A new user's first `make run`, timed from a fresh clone.

    .venv/bin/python bench/first_run.py        # make bench-first-run

Clones this repository's committed HEAD into a temporary directory and runs
`make run` there the way a new user would, with a home directory of its own
(an empty pip cache, the embedded PostgreSQL created from nothing). Timed from
the command: the install into `.venv` (until `tierscope demo` starts), the
console and API URLs printed, the first business transaction in
`/api/v1/transactions`, and every business transaction of both apps. Then
Ctrl-C (SIGINT to the process group, as a terminal sends it): the time to
exit, that nothing of the tree is left running, and that nothing was logged
as an error on the way out. The port is `TIERSCOPE_PORT` (a free one), so a
running tierscope is left alone. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from rich.console import Console

from tierscope.testing.collector import free_port

ROOT = Path(__file__).resolve().parents[1]
console = Console(stderr=True)
URL_LINE = re.compile(r"console: (http://\S+)")
# The business transactions of both apps (demo/rules.yaml names them).
EXPECTED_BTS = 13
OUT_LINES_OF_TROUBLE = re.compile(r"Traceback|^ERROR|Future exception was never retrieved")


class Output(threading.Thread):
    """Reads the command's output, time-stamping the lines."""

    def __init__(self, stream: Any, started: float) -> None:
        super().__init__(daemon=True)
        self.stream, self.started = stream, started
        self.lines: list[tuple[float, str]] = []

    def run(self) -> None:
        for raw in self.stream:
            self.lines.append((time.monotonic() - self.started, raw.decode(errors="replace").rstrip()))

    def first(self, pattern: re.Pattern[str] | str) -> tuple[float, str] | None:
        for at, line in list(self.lines):
            if re.search(pattern, line):
                return at, line
        return None


def wait_for(what: str, deadline: float, check: Any) -> Any:
    with console.status(what):
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            time.sleep(1)
    raise SystemExit(f"timed out: {what}")


def transactions(url: str, credentials: Path) -> int:
    if not credentials.exists():
        return 0
    token = json.loads(credentials.read_text())["api_token"]
    try:
        answer = httpx.get(
            f"{url}/api/v1/transactions", params={"from": "1h"}, headers={"Authorization": f"Bearer {token}"}
        )
    except httpx.HTTPError:
        return 0
    return len(answer.json()["transactions"]) if answer.status_code == 200 else 0


def left_running(marker: str) -> list[str]:
    """Processes whose command line or working directory names the clone or its home."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "cwd"]):
        try:
            text = " ".join(process.info["cmdline"] or []) + " " + (process.info["cwd"] or "")
        except psutil.Error:
            continue
        if marker in text and process.pid != os.getpid():
            found.append(f"{process.pid}: {text[:120]}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=900, help="seconds for the whole run")
    parser.add_argument("--keep", action="store_true", help="keep the clone")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="tierscope-first-run-"))
    clone, home, port = root / "tierscope", root / "home", free_port()
    home.mkdir()
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIERSCOPE_", "VIRTUAL_ENV", "PIP_"))}
    env |= {"HOME": str(home), "TIERSCOPE_PORT": str(port)}
    url = f"http://127.0.0.1:{port}"
    credentials = home / ".local/share/tierscope/credentials.json"
    started = time.monotonic()
    deadline = started + args.timeout
    process = subprocess.Popen(
        ["make", "run"],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    output = Output(process.stdout, started)
    output.start()
    figures: dict[str, Any] = {"port": port}
    try:
        installed = wait_for(
            "make run: installing into .venv", deadline, lambda: output.first(r"tierscope demo$")
        )
        figures["install_s"] = round(installed[0], 1)
        shown = wait_for("tierscope demo: starting", deadline, lambda: output.first(URL_LINE))
        figures["urls_shown_s"] = round(shown[0], 1)
        figures["urls_after_install_s"] = round(shown[0] - installed[0], 1)
        figures["console_url"] = URL_LINE.search(shown[1]).group(1)  # type: ignore[union-attr]
        wait_for("the first business transaction", deadline, lambda: transactions(url, credentials) > 0)
        figures["first_bt_s"] = round(time.monotonic() - started, 1)
        wait_for(
            f"all {EXPECTED_BTS} business transactions",
            deadline,
            lambda: transactions(url, credentials) >= EXPECTED_BTS,
        )
        figures["all_bts_s"] = round(time.monotonic() - started, 1)
    finally:
        stopping = time.monotonic()
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in a terminal
        try:
            process.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        output.join(5)
        figures["stop_s"] = round(time.monotonic() - stopping, 1)
        figures["exit_code"] = process.returncode
        time.sleep(2)
        figures["left_running"] = left_running(str(root))
        stop_at = stopping - started
        figures["errors_at_stop"] = [
            line for at, line in output.lines if at >= stop_at and OUT_LINES_OF_TROUBLE.search(line)
        ]
        log = root.with_suffix(".log")
        log.write_text("\n".join(f"{at:7.1f}  {line}" for at, line in output.lines))
        figures["log"] = str(log)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    ok = not figures["left_running"] and not figures["errors_at_stop"]
    figures["clean_stop"] = ok
    console.print(figures)
    print(json.dumps(figures), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
