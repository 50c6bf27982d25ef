"""The fault catalog, and the switch board the demo applications read.

Each fault names the tier and component it hits and the business transactions
it should show up in: that is the ground truth alerts are scored against. The
running estate keeps the active faults in ``<data-dir>/demo/faults.json``; the
applications read that small file (at most twice a second), so switching a
fault needs no restart and no coupling to the platform.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Fault:
    name: str
    tier: str
    service: str
    component: str
    bts: tuple[str, ...]
    description: str
    site: str | None = None
    fails: bool = False  # it makes requests fail (rather than slow): its code is named by operation


CATALOG: dict[str, Fault] = {
    fault.name: fault
    for fault in (
        Fault(
            "db_slow",
            "db",
            "erp-api",
            "SELECT sku, on_hand, pg_sleep(?) FROM inventory WHERE sku = ?",
            ("ERP / Check inventory",),
            "one statement slow: the inventory lookup takes 300 ms more",
        ),
        Fault(
            "db_lock",
            "db",
            "crm-web",
            "INSERT INTO leads",
            ("CRM / Create lead",),
            "lock contention on table leads: a batch job holds an EXCLUSIVE lock most of each second",
        ),
        Fault(
            "external_slow",
            "external",
            "crm-web",
            "ext-services /verify-address",
            ("CRM / Create lead",),
            "address verification at ext-services answers 1.2 s late",
        ),
        Fault(
            "external_down",
            "external",
            "crm-web",
            "ext-services /credit-check",
            ("CRM / Contact detail",),
            "the credit check fails: half 503, half time out (the CRM waits 1.5 s); the page fails",
            fails=True,
        ),
        Fault(
            "app_cpu",
            "app",
            "crm-web",
            "crm-web /pipeline",
            ("CRM / Opportunity pipeline",),
            "CPU burn of about 150 ms in the pipeline page's code",
        ),
        Fault(
            "worker_backlog",
            "platform",
            "erp-worker",
            "erp-worker jobs",
            ("ERP / Post invoice", "ERP / Import customers"),
            "every job takes 0.4 s longer: the worker runs near its capacity and, at busy times, jobs queue",
        ),
        Fault(
            "wan_latency",
            "network",
            "wan-proxy",
            "branch-east link",
            (),
            "the branch-east site's link adds 250 ms each way; hq and branch-west are untouched",
            site="branch-east",
        ),
        Fault(
            "browser_slow",
            "browser",
            "crm-web",
            "crm-web /pipeline heavy.js",
            ("CRM / Opportunity pipeline",),
            "the pipeline page loads a script that keeps the browser's main thread busy",
        ),
        Fault(
            "error_spike",
            "app",
            "erp-api",
            "erp-api POST /api/orders",
            ("ERP / Create sales order",),
            "half of the sales orders fail with an exception",
            fails=True,
        ),
    )
}


class FaultSwitch:
    """Which faults are on, read from the estate's faults file (cached for 0.5 s)."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path or os.environ.get("TIERSCOPE_DEMO_FAULTS", "faults.json"))
        self._checked = 0.0
        self._active: dict[str, float] = {}

    def active(self, name: str) -> bool:
        now = time.time()
        if now - self._checked > 0.5:
            self._checked = now
            self._active = read_faults(self.path)
        return self._active.get(name, 0.0) > now


def read_faults(path: Path) -> dict[str, float]:
    """{fault: until (unix seconds)}; an absent or half-written file means none."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(name): float(until) for name, until in raw.items() if name in CATALOG}


def write_faults(path: Path, active: dict[str, float]) -> None:
    """Replace the file atomically, so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(active))
    temporary.replace(path)
