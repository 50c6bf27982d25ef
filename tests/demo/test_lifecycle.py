"""``tierscope demo`` stops its whole tree by itself: at the end of ``--minutes``, and on
SIGTERM sent to the demo process alone (as a service manager or ``kill PID`` does),
not to its process group. Small estates (two HTTP users, no browser) keep these quick;
``test_estate.py`` shows Ctrl-C to the whole group on the full estate.
"""

from __future__ import annotations

import contextlib
import signal
import time

import psutil
import pytest

from .conftest import DemoProcess, running_demo

pytestmark = pytest.mark.timeout(400)

SMALL = {"users": 2, "browsers": 0}


class Seen(dict[int, psutil.Process]):
    """Processes of the demo's tree by pid, with the command line each had when seen."""

    def __init__(self) -> None:
        super().__init__()
        self.commands: dict[int, str] = {}

    def look(self, demo: DemoProcess) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            for process in demo.tree():
                if process.pid not in self:
                    with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
                        self.commands[process.pid] = " ".join(process.cmdline())
                    self[process.pid] = process


def _watch_until_exit(demo: DemoProcess, timeout: float, seen: Seen | None = None) -> Seen:
    """Every process of the demo's tree seen until the demo exits (the collector's workers
    and processors start after the estate)."""
    assert demo.process is not None
    seen = seen if seen is not None else Seen()
    deadline = time.monotonic() + timeout
    while demo.process.poll() is None and time.monotonic() < deadline:
        seen.look(demo)
        time.sleep(0.5)
    return seen


def _left_running(seen: Seen) -> list[str]:
    """The processes seen that still run (psutil.Process knows a recycled pid is not its process)."""
    _, alive = psutil.wait_procs(list(seen.values()), timeout=15)  # children may end just after us
    left = []
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                left.append(" ".join(process.cmdline()))
    return left


def _postmaster(demo: DemoProcess) -> psutil.Process:
    """The embedded PostgreSQL runs detached (pg_ctl), outside the demo's tree."""
    pid = int((demo.data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
    return psutil.Process(pid)


def _assert_apps_were_in_the_tree(seen: Seen) -> None:
    commands = list(seen.commands.values())
    for app in ("demo.apps.ext", "demo.apps.crm", "demo.apps.erp", "demo.apps.worker"):
        assert any(app in command for command in commands), commands


def _assert_banner(demo: DemoProcess) -> None:
    log = demo.log()
    assert f"console: {demo.url}/ " in log, log
    assert f"API: {demo.url}/api/v1/transactions " in log, log
    credentials = demo.data_dir / "credentials.json"
    assert f"tenant keys (credentials): {credentials}\n" in log, log
    assert credentials.exists()


def test_minutes_stops_the_whole_tree_by_itself_with_exit_0() -> None:
    minutes = 0.75  # 45 s: time for the collector beside the estate to come up first
    with contextlib.contextmanager(running_demo)(minutes=minutes, ready=False, **SMALL) as demo:
        assert demo.process is not None
        postgres = _postmaster(demo)
        started = time.monotonic()
        seen = _watch_until_exit(demo, minutes * 60 + 120)
        assert demo.process.poll() == 0, demo.log()
        # Not before its time (the estate was up when we started counting).
        assert time.monotonic() - started > minutes * 60 - 5
        _assert_apps_were_in_the_tree(seen)
        assert len(seen) >= 6, seen  # the demo, its four apps, the collector's processes
        assert not _left_running(seen)
        assert not postgres.is_running() or postgres.status() == psutil.STATUS_ZOMBIE
        _assert_banner(demo)
        assert "stops by itself after 0.75 min" in demo.log()
        assert "tierscope stopped." in demo.log()
        assert not (demo.data_dir / "demo" / "estate.json").exists()


def test_sigterm_to_the_demo_process_alone_stops_the_whole_tree() -> None:
    with contextlib.contextmanager(running_demo)(minutes=15, **SMALL) as demo:
        assert demo.process is not None
        postgres = _postmaster(demo)
        seen = Seen()
        seen.look(demo)
        _assert_apps_were_in_the_tree(seen)
        demo.process.send_signal(signal.SIGTERM)  # this pid only: no child gets the signal from us
        _watch_until_exit(demo, 120, seen)
        assert demo.process.poll() == 0, demo.log()
        assert not _left_running(seen)
        assert not postgres.is_running() or postgres.status() == psutil.STATUS_ZOMBIE
        _assert_banner(demo)
        assert "tierscope stopped." in demo.log()
        assert not (demo.data_dir / "demo" / "estate.json").exists()
