"""Demo estate benchmark: what ``tierscope demo`` costs at its default load.

    .venv/bin/python bench/demo.py [--seconds 120] [--users 12]

Runs ``tierscope demo`` (default users and think time, flat load: an ordinary
busy hour) with its own embedded PostgreSQL, waits a warm-up minute, then over
``--seconds`` measures the CPU and resident memory of the estate's own
processes (the four apps, and the demo process with the users, WAN links and
control endpoint; not the collector, processors or PostgreSQL), the requests
the users made, and the spans stored per second. The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import psycopg

from tierscope.testing.collector import free_port, tierscope_command

APPS = ("tierscope.demo.apps", "gunicorn")


def estate(root: psutil.Process) -> list[psutil.Process]:
    """The demo process itself and its app processes (with gunicorn's worker)."""
    found = [root]
    for child in root.children(recursive=True):
        try:
            if any(mark in " ".join(child.cmdline()) for mark in APPS):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def cpu(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--users", type=int, default=12)
    args = parser.parse_args()
    root_dir = Path(tempfile.mkdtemp(prefix="tierscope-demo-bench-"))
    data = root_dir / "data"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIERSCOPE_")}
    log = (root_dir / "demo.log").open("wb")
    command = [
        *tierscope_command(),
        "demo",
        "--data-dir",
        str(data),
        "--port",
        str(port),
        "--users",
        str(args.users),
        "--compress",
        "0",
    ]
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while not (data / "demo" / "estate.json").exists():
            if process.poll() is not None:
                raise SystemExit((root_dir / "demo.log").read_text())
            time.sleep(0.5)
        time.sleep(60)  # warm-up: users started, caches and pools filled
        control = json.loads((data / "demo" / "estate.json").read_text())["control_url"]
        processes = estate(psutil.Process(process.pid))
        requests_before = httpx.get(f"{control}/stats", params={"since": 1e12}).json()["requests"]
        cpu_before, started = cpu(processes), time.time()
        time.sleep(args.seconds)
        cpu_after, ended = cpu(processes), time.time()
        requests_after = httpx.get(f"{control}/stats", params={"since": 1e12}).json()["requests"]
        rss = sum(p.memory_info().rss for p in processes if p.is_running()) / 2**20
        time.sleep(20)  # the window's traces settle and are processed
        access = json.loads((data / "postgres.json").read_text())
        with psycopg.connect(
            host="127.0.0.1",
            port=access["port"],
            user=access["user"],
            password=access["password"],
            dbname="tierscope",
        ) as conn:
            row = conn.execute(
                "SELECT count(*), coalesce(sum(span_count), 0) FROM trace_summaries"
                " WHERE start_time >= to_timestamp(%s) AND start_time < to_timestamp(%s)",
                (started, ended),
            ).fetchone()
        assert row is not None
        seconds = ended - started
        result = {
            "users": args.users,
            "seconds": round(seconds, 1),
            "estate_cpu_percent_of_one_core": round(100 * (cpu_after - cpu_before) / seconds, 1),
            "estate_rss_mib": round(rss, 1),
            "estate_processes": len(processes),
            "requests_per_s": round((requests_after - requests_before) / seconds, 2),
            "traces_per_s": round(row[0] / seconds, 2),
            "spans_per_s": round(row[1] / seconds, 1),
        }
        print(json.dumps(result))
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(120)
        log.close()
        shutil.rmtree(root_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
