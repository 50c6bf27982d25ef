"""Threads started before a fork: the exporter thread runs in the parent when it
forks; each child starts its own and its spans arrive, with its own pid — also
from multiprocessing children, which end without running atexit."""

from __future__ import annotations

from collections.abc import Callable

from tierscope.testing.apps import AppProcess, fetch_trace
from tierscope.testing.collector import CollectorProcess


def test_spans_of_forked_children_arrive(
    collector: CollectorProcess, run_app: Callable[..., AppProcess]
) -> None:
    program = run_app(
        ["python", "forking.py"], collector, service="crm-forking", env={"OTEL_BSP_SCHEDULE_DELAY": "60000"}
    )
    assert program.wait(60) == 0, program.log()
    lines = [
        line.split()
        for line in program.log().splitlines()
        if line.startswith(("before", "os.fork", "multi", "after"))
    ]
    printed = {" ".join(parts[:-2]): (parts[-2], int(parts[-1])) for parts in lines}
    assert set(printed) == {"before fork", "os.fork child", "multiprocessing child", "after fork"}
    parent_pid = printed["before fork"][1]
    for name, (trace_id, pid) in printed.items():
        (span,) = fetch_trace(collector, trace_id, spans=1)
        assert span["name"] == name
        assert span["resource"]["process.pid"] == pid
        assert (pid == parent_pid) == (name in ("before fork", "after fork"))
