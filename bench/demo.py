"""Demo estate benchmark: what ``tierscope demo`` costs at its default load.

    .venv/bin/python bench/demo.py [--seconds 120] [--users 12] [--browsers 2]

Runs ``tierscope demo`` (default users, browser users and think time, flat
load: an ordinary busy hour) with its own embedded PostgreSQL, waits a warm-up
minute, then over ``--seconds`` measures the CPU and resident memory of the
estate's own processes (the four apps, the demo process with the HTTP users,
WAN links and control endpoint, and the browser users' Playwright drivers and
Chromium processes; not the collector, processors or PostgreSQL), the requests
the users made, the spans stored per second and the browser experiences. The
baseline of the same run is the estate without its browsers (apps and demo
process): the browsers' cost is printed as a ratio to it. The last line is JSON.
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
BROWSERS = ("playwright", "chromium", "chrome_crashpad")


def estate(root: psutil.Process) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """(the demo process and its app processes, the browser users' processes)."""
    found, browsers = [root], []
    for child in root.children(recursive=True):
        try:
            command = " ".join(child.cmdline())
        except psutil.NoSuchProcess:
            continue
        if any(mark in command for mark in APPS):
            found.append(child)
        elif any(mark in command for mark in BROWSERS):
            browsers.append(child)
    return found, browsers


def memory_mib(processes: list[psutil.Process]) -> tuple[float, float]:
    """(resident, proportional) memory in MiB. Chromium's processes share most of
    their pages (zygote, libraries): their RSS summed counts those many times, PSS
    (each shared page split among its users) once."""
    rss = pss = 0
    for process in processes:
        try:
            info = process.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return rss / 2**20, pss / 2**20


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
    parser.add_argument("--browsers", type=int, default=2)
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
        "--browsers",
        str(args.browsers),
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
        processes, browsers = estate(psutil.Process(process.pid))
        requests_before = httpx.get(f"{control}/stats", params={"since": 1e12}).json()["requests"]
        cpu_before, browser_before, started = cpu(processes), cpu(browsers), time.time()
        time.sleep(args.seconds)
        cpu_after, browser_after, ended = cpu(processes), cpu(browsers), time.time()
        requests_after = httpx.get(f"{control}/stats", params={"since": 1e12}).json()["requests"]
        (rss, pss), (browser_rss, browser_pss) = memory_mib(processes), memory_mib(browsers)
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
            experiences = conn.execute(
                "SELECT count(*), count(trace_id) FROM rum_experiences"
                " WHERE start_time >= to_timestamp(%s) AND start_time < to_timestamp(%s)",
                (started, ended),
            ).fetchone()
        assert row is not None
        assert experiences is not None
        seconds = ended - started
        base_cpu = 100 * (cpu_after - cpu_before) / seconds
        browser_cpu = 100 * (browser_after - browser_before) / seconds
        result = {
            "users": args.users,
            "browsers": args.browsers,
            "seconds": round(seconds, 1),
            "estate_cpu_percent_of_one_core": round(base_cpu + browser_cpu, 1),
            "estate_rss_mib": round(rss + browser_rss, 1),
            "estate_pss_mib": round(pss + browser_pss, 1),
            "estate_processes": len(processes) + len(browsers),
            "without_browsers_cpu_percent_of_one_core": round(base_cpu, 1),
            "without_browsers_rss_mib": round(rss, 1),
            "without_browsers_pss_mib": round(pss, 1),
            "browsers_cpu_percent_of_one_core": round(browser_cpu, 1),
            "browsers_rss_mib": round(browser_rss, 1),
            "browsers_pss_mib": round(browser_pss, 1),
            "cpu_ratio_to_estate_without_browsers": round((base_cpu + browser_cpu) / base_cpu, 2)
            if base_cpu
            else None,
            "requests_per_s": round((requests_after - requests_before) / seconds, 2),
            "traces_per_s": round(row[0] / seconds, 2),
            "spans_per_s": round(row[1] / seconds, 1),
            "experiences_per_s": round(experiences[0] / seconds, 2),
            "experiences_joined_share": round(experiences[1] / experiences[0], 3) if experiences[0] else None,
        }
        print(
            f"estate {result['estate_cpu_percent_of_one_core']} % of a core "
            f"({result['cpu_ratio_to_estate_without_browsers']}x the estate without its browsers), "
            f"{result['spans_per_s']} spans/s, {result['experiences_per_s']} experiences/s"
        )
        print(json.dumps(result))
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(120)
        log.close()
        shutil.rmtree(root_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
