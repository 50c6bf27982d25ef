"""The demo alert campaign of ``test_alerts.py``, run beside the rest of the suite.

The campaign is one real ``tierscope demo``: a fresh estate warms up until its
transactions have recent minutes to be judged against, runs a minute more
without faults, then runs the fault catalog in two phases. About eleven
minutes, nearly all of it waiting for the estate's own clock, on about one of
the machine's two cores. So ``make test`` starts it in a thread as the session
starts and runs tests that have no clock of their own beside it (the root
``conftest.py`` orders them first); ``test_alerts.py`` then judges what it saw.

While the campaign runs, the tests beside it run at a lower CPU priority (nice
10, the pytest thread and everything it starts): the demo's response times are
what alerting judges, and a test suddenly taking both cores would make them
jump (a false alarm the test would rightly fail on, caused by the test itself).
The priority is restored once the campaign is over.

What the tests read afterwards (apps, log, alerts seen, the fault table) is
kept on the :class:`Campaign`, so the estate can stop as soon as it is done.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import psutil

from tierscope.demo import scoring
from tierscope.demo.faults import CATALOG
from tierscope.processing.rum_rollup import RUM_TIERS
from tierscope.testing.chromium import ensure_chromium

from .conftest import DemoProcess, running_demo

ENV = {"TIERSCOPE_ALERT_DELAY": "15s", "TIERSCOPE_ALERT_INTERVAL": "5s"}
# Faults of one phase touch different transactions; db_lock and external_slow
# (both in Create lead) are apart, and external_down, whose failures burn an SLO
# of four CRM transactions, comes after external_slow rather than before it.
PHASES = [
    ["db_slow", "external_slow", "worker_backlog", "app_cpu", "wan_latency"],
    ["db_lock", "external_down", "error_spike", "browser_slow"],
]
assert sorted(name for phase in PHASES for name in phase) == sorted(CATALOG), "a fault is not in a phase"
WITHIN = 120.0  # seconds from a fault's start to its alert: the promise
FAULT_SECONDS = WITHIN + 10  # on a little longer than that: a late alert is seen late, not missed
QUIET_SECONDS = 60  # fault-free traffic judged against its full reference before any fault
MAX_UNANSWERED = 60.0  # seconds of 503s from the alert API before the campaign gives up
TIMEOUT = 1500.0  # seconds for the whole campaign, the estate's start included
BESIDE_NICE = 10  # the tests' CPU priority while the campaign runs
# What runs beside the campaign (paths from the repository's root): tests with
# no wall-clock bound of their own, about as long as the campaign in all. The
# campaign is judged after them; the tests timed against a clock (latency
# within noise, a deadline of a second or two, capacity) and the other demos
# come after it, on a machine to themselves.
BESIDE = (
    "tests/agent/",
    "tests/alerting/",
    "tests/collector/",
    "tests/config/",
    "tests/dashboards/",
    "tests/demo/test_scoring.py",
    "tests/demo/test_traffic.py",
    "tests/e2e/test_cardinality.py",
    "tests/e2e/test_dashboards.py",
    "tests/e2e/test_duplicates.py",
    "tests/e2e/test_metrics.py",
    "tests/e2e/test_sdk_roundtrip.py",
    "tests/e2e/test_shards.py",
    "tests/e2e/test_status_contract.py",
    "tests/e2e/test_tenants.py",
    "tests/fuzz/",
    "tests/processing/",
    "tests/rum/",
    "tests/security/",
    "tests/slo/",
    "tests/store/",
)
NOT_BESIDE = (
    "tests/agent/test_export.py",  # the app's latency with the collector down, against a baseline
    "tests/processing/test_sqlnorm.py",  # a mean time per statement
    "tests/store/test_hung_store.py",  # cut off between 1.5 and 5 s
    "tests/store/test_span_ranges.py",  # a busy table left within 0.5 s
)


class Stopped(Exception):
    """The session ended before the campaign did."""


@dataclass
class Seen:
    """An alert as the API showed it at a moment (wall clock)."""

    at: float
    alert: dict[str, Any]


@dataclass
class Campaign:
    demo: DemoProcess
    faults: dict[str, dict[str, Any]] = field(default_factory=dict)  # demo_faults rows by fault
    seen: list[Seen] = field(default_factory=list)
    quiet: list[dict[str, Any]] = field(default_factory=list)  # alerts before any fault
    quiet_seconds: float = 0.0  # from the first minute of traffic to the first fault
    browser_users: bool = False
    instances: dict[str, str] = field(default_factory=dict)  # instance id -> service
    # per fault: service -> operations its code ran in the fault's transactions
    operations: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    apps: dict[str, str] = field(default_factory=dict)  # the estate's apps, as it published them
    log: str = ""  # the end of the demo's log, for failure messages
    # per site, per minute: real users' experiences and network ms per experience
    # (what a network alert judges), for failure messages
    site_minutes: dict[str, list[tuple[str, int, float]]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    last_answer: float = field(default_factory=time.time)  # wall clock of the last answered poll


def _alerts(demo: DemoProcess) -> list[dict[str, Any]] | None:
    """The alerts the API shows now, or None when it asks to be asked again: a
    503 with Retry-After is the collector's answer to a store too busy to
    borrow a connection from within a second, which a loaded CI machine gives
    now and then (it ended a whole campaign once). The next poll, 3 s later,
    asks again; a campaign that gets no answer for a minute fails."""
    response = demo.get("/api/v1/alerts")
    if response.status_code == 503 and response.headers.get("Retry-After"):
        return None
    assert response.status_code == 200, response.text
    return list(response.json()["alerts"])


def _experiences(demo: DemoProcess) -> int:
    with demo.store() as conn:
        (count,) = conn.execute("SELECT count(*) FROM rum_experiences").fetchone()
    return int(count)


def _site_minutes(demo: DemoProcess) -> dict[str, list[tuple[str, int, float]]]:
    network = RUM_TIERS.index("network") + 1  # PostgreSQL arrays count from 1
    out: dict[str, list[tuple[str, int, float]]] = {}
    with demo.store() as conn:
        for site, bucket, count, us in conn.execute(
            "SELECT site, bucket, sum(count), sum(tier_sum_us[%s]) FROM rum_rollups"
            " WHERE resolution = 'minute' GROUP BY site, bucket ORDER BY site, bucket",
            (network,),
        ).fetchall():
            ms = float(us) / int(count) / 1000 if count else 0.0
            out.setdefault(site, []).append((f"{bucket:%H:%M}", int(count), round(ms, 1)))
    return out


def _first_traffic(demo: DemoProcess) -> datetime | None:
    with demo.store() as conn:
        (first,) = conn.execute(
            "SELECT min(bucket) FROM bt_rollups WHERE resolution = 'minute' AND calls > 0"
        ).fetchone()
    return first


def _wait_for_reference(campaign: Campaign) -> datetime:
    """Until three busy minutes lie before the judged window (2 min, judged up to
    15 s ago): the recent-minutes reference a fresh estate is judged against.
    The alerts seen meanwhile are kept (alerting runs during the warm-up too)."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        first = _first_traffic(campaign.demo)
        if first is not None and (datetime.now(UTC) - first).total_seconds() > (3 + 2) * 60 + 30:
            return first
        _watch(campaign, 5)
    raise AssertionError(f"the estate produced no rollups:\n{campaign.demo.log()}")


def _watch(campaign: Campaign, seconds: float) -> None:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        now = time.time()
        alerts = _alerts(campaign.demo)
        if alerts is None:
            unanswered = now - campaign.last_answer
            assert unanswered < MAX_UNANSWERED, f"the alert API answered 503 for {unanswered:.0f} s"
        else:
            campaign.last_answer = now
            campaign.seen += [Seen(now, alert) for alert in alerts]
        if campaign.stop.wait(3):
            raise Stopped


def run(demo: DemoProcess, stop: threading.Event | None = None) -> Campaign:
    """The warm-up, the fault-free minute, then both phases of faults; the fault
    table and what scoring needs from the store read at the end."""
    campaign = Campaign(demo, stop=stop or threading.Event())
    first_traffic = _wait_for_reference(campaign)
    _watch(campaign, QUIET_SECONDS)
    campaign.quiet = [s.alert for s in campaign.seen]
    campaign.quiet_seconds = time.time() - first_traffic.timestamp()
    control = demo.state()["control_url"]
    for phase in PHASES:
        for name in phase:
            response = httpx.post(f"{control}/faults/{name}", params={"for": FAULT_SECONDS}, timeout=30)
            assert response.status_code == 200, response.text
        _watch(campaign, FAULT_SECONDS)
    campaign.browser_users = _experiences(demo) > 0
    campaign.site_minutes = _site_minutes(demo)
    with demo.store() as conn:
        for row in conn.execute(
            "SELECT fault, tier, service, component, site, affected_bts, started_at, ended_at"
            " FROM demo_faults ORDER BY id"
        ).fetchall():
            keys = ("fault", "tier", "service", "component", "site", "bts", "started_at", "ended_at")
            campaign.faults[row[0]] = dict(zip(keys, row, strict=True))
        campaign.instances = scoring.read_instances(conn)
        for name, fault in campaign.faults.items():
            campaign.operations[name] = scoring.read_operations(conn, fault)
    campaign.apps = demo.state()["apps"]
    campaign.log = demo.log()
    return campaign


class BackgroundCampaign:
    """The campaign in a thread of its own, from the session's start."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="demo-alert-campaign", daemon=True)
        self._began = 0.0
        self._result: Campaign | None = None
        self._error: BaseException | None = None
        self._niced: int | None = None  # the tests' priority before the campaign, while lowered

    def start(self) -> None:
        """Start the campaign, then lower the priority of the tests beside it.

        Linux keeps a priority per thread and a thread or child inherits its
        creator's: the campaign's thread, started first, and the demo it starts
        keep the normal priority."""
        self._began = time.monotonic()
        self._thread.start()
        try:
            self._niced = os.getpriority(os.PRIO_PROCESS, 0)
            os.setpriority(os.PRIO_PROCESS, 0, max(self._niced, BESIDE_NICE))
        except OSError:
            self._niced = None

    def _main(self) -> None:
        try:
            ensure_chromium()  # the estate's browser users
            with contextlib.contextmanager(running_demo)(ENV, minutes=30) as demo:
                self._result = run(demo, self._stop)
        except BaseException as exc:  # handed to the test that waits for it
            self._error = exc

    def result(self) -> Campaign:
        """Wait for the campaign (up to :data:`TIMEOUT` from its start) and hand it over."""
        self._thread.join(max(0.0, TIMEOUT - (time.monotonic() - self._began)))
        self._restore_priority()
        if self._thread.is_alive():
            self.stop()
            raise AssertionError(f"the demo alert campaign did not finish within {TIMEOUT:.0f} s")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def stop(self) -> None:
        """End the campaign early (the session is over) and stop its estate."""
        self._stop.set()
        self._thread.join(120)
        self._restore_priority()

    def _restore_priority(self) -> None:
        """Back to the priority the session started with: this thread, and what it
        started meanwhile (the session's PostgreSQL among them). Lowering a nice
        value needs root; without it the rest of the session stays at nice 10,
        all of it alike."""
        if self._niced is None:
            return
        niced, self._niced = self._niced, None
        for thread in psutil.Process().threads():  # pools started meanwhile took it too
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, thread.id, niced)
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if child.nice() > niced:
                    child.nice(niced)
