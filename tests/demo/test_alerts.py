"""The fault catalog against alerting, on one real ``tierscope demo``: every fault
raises a ``warning`` or ``critical`` alert within two minutes of its start that
names the right tier and component (scored against the demo's fault table,
``demo_faults``), and traffic with no fault raises none.

The estate starts fresh, so its transactions are judged against their own
recent minutes (``alerting/signals.py``): faults start once those exist (about
six minutes). Every alert seen before the first fault counts as a false alarm:
the estate's warm-up, when alerting runs on a reference still being built, and
a minute more once the reference is full (at least five minutes of fault-free
traffic in all, asserted). Then faults run in two phases of
faults that touch different transactions (as in ``test_estate.py``): about
eleven minutes in all, most of it waiting, so the session runs the campaign
beside other tests (``campaign.py``) and this module judges it. An alert is counted for a fault the
first time the alert API shows one, firing, that covers a transaction of the
fault with the fault's tier and component: a second fault of an already
failing component joins its incident (one cause, one alert), which is what the
on-call person should see, as long as the alert did not cover that
transaction before the fault. ``wan_latency`` and ``browser_slow`` are seen by
the estate's browser users only (their RUM experiences): the campaign installs
Chromium first, and they are judged like the rest.
"""

from __future__ import annotations

from typing import Any

import pytest

from tierscope.demo import scoring
from tierscope.demo.faults import CATALOG

from .campaign import FAULT_SECONDS, TIMEOUT, WITHIN, BackgroundCampaign, Campaign
from .conftest import CAMPAIGN

pytestmark = pytest.mark.timeout(TIMEOUT)

MIN_QUIET_SECONDS = 300  # the fault-free window judged in all, warm-up included
BROWSER_USER_TIERS = ("browser", "network")  # seen only by real browsers (RUM): the chromium fixture
ACTIVE = ("firing", "acknowledged")


@pytest.fixture(scope="module")
def campaign(request: pytest.FixtureRequest) -> Campaign:
    """The campaign the session started beside the other tests (``campaign.py``),
    or, should this module run in a session that did not start it, one now."""
    background = request.config.stash.get(CAMPAIGN, None)
    if background is None:
        background = BackgroundCampaign()
        background.start()
    return background.result()


def detection(campaign: Campaign, name: str) -> tuple[float | None, list[str]]:
    """Seconds from the fault's start to the first firing alert that scores, and
    what was seen meanwhile (for the failure message). An alert already open
    before the fault counts only once it covers a transaction of the fault it
    did not cover before: it must be this fault that it reports."""
    fault = campaign.faults[name]
    start = fault["started_at"].timestamp()
    before: dict[int, set[str]] = {}
    for seen in campaign.seen:
        if seen.at < start:
            before.setdefault(seen.alert["id"], set()).update(bt for _, bt in seen.alert["bts"])
    notes: list[str] = []
    for seen in campaign.seen:
        alert = seen.alert
        if not start <= seen.at <= start + FAULT_SECONDS or alert["state"] not in ACTIVE:
            continue
        if not scoring.covers(fault, alert):
            continue
        earlier = before.get(alert["id"])
        if earlier is not None and (not fault["bts"] or set(fault["bts"]) <= earlier):
            continue  # open before the fault, about these transactions already
        apps = campaign.apps
        if scoring.right(fault, alert, apps, campaign.instances, campaign.operations[name]):
            return seen.at - start, notes
        note = f"{alert['severity']} {alert['tier']} / {alert['component']}: {alert['title']}"
        if note not in notes:
            notes.append(note)
    return None, notes


@pytest.mark.parametrize("name", list(CATALOG))
def test_each_fault_raises_an_alert_naming_its_tier_and_component_within_two_minutes(
    campaign: Campaign, name: str
) -> None:
    if CATALOG[name].tier in BROWSER_USER_TIERS:
        log = campaign.log
        assert campaign.browser_users, f"no browser user's experience reached the store:\n{log}"
    assert name in campaign.faults, f"{name} was not switched on"
    after, notes = detection(campaign, name)
    fault = campaign.faults[name]
    users = ""
    if fault["tier"] in BROWSER_USER_TIERS:  # what real users' experiences showed, minute by minute
        users = f"; experiences and network ms per site and minute: {campaign.site_minutes}"
    assert after is not None, (
        f"{name} ({fault['tier']} / {fault['component']}, {fault['bts']}): no alert naming it; "
        f"started {fault['started_at']:%H:%M:%S}; seen: {notes}{users}"
    )
    assert after <= WITHIN, f"{name}: the alert came {after:.0f} s after the fault started"


def test_fault_free_traffic_raises_no_alert(campaign: Campaign) -> None:
    # Warm-up included: a fresh estate, alerting on from its first minute.
    assert campaign.quiet_seconds >= MIN_QUIET_SECONDS, campaign.quiet_seconds
    # The evidence too (each signal's value against what was expected, the tiers'
    # excess): a false alarm says what moved.
    latest = {a["id"]: a for a in campaign.quiet}  # as last seen
    assert not campaign.quiet, [
        (a["severity"], a["state"], a["title"], a.get("evidence")) for a in latest.values()
    ]
    # While faults run, every alert concerns a transaction a fault touched, or
    # names a fault's tier and component (a site's link slows every transaction
    # its users use: the WAN fault lists none).
    touched = {bt for fault in campaign.faults.values() for bt in fault["bts"]}
    apps = campaign.apps

    def names_a_fault(alert: dict[str, Any]) -> bool:
        return any(
            alert["tier"] == fault["tier"]
            and scoring.names_component(
                fault, alert["component"], apps, campaign.instances, campaign.operations[name]
            )
            for name, fault in campaign.faults.items()
        )

    unrelated = {
        seen.alert["id"]: seen.alert["title"]
        for seen in campaign.seen
        if not touched & {bt for _, bt in seen.alert["bts"]} and not names_a_fault(seen.alert)
    }
    assert not unrelated, unrelated
