"""The demo's simulated business clock: the week starts on a Monday morning
whatever the real day, and a quiet hour says when the business is busy again."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from tierscope.demo.traffic import QUIET, SITES, Clock, Traffic, load_factor

SATURDAY_AFTERNOON = datetime(2026, 12, 5, 14, 30, tzinfo=UTC).timestamp()


def test_a_demo_started_on_a_saturday_opens_on_a_busy_monday_morning() -> None:
    clock = Clock(compress=24, started=SATURDAY_AFTERNOON)
    opening = clock.now(SATURDAY_AFTERNOON)
    assert (opening.weekday(), opening.hour, opening.minute) == (0, 8, 0)
    assert clock.factor(SATURDAY_AFTERNOON) >= 1.0
    # A real hour later a whole business day has passed: Tuesday, same hour.
    assert clock.now(SATURDAY_AFTERNOON + 3600) == datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    # The real Saturday itself would have been quiet: that is what this avoids.
    assert load_factor(datetime.fromtimestamp(SATURDAY_AFTERNOON, UTC)) < QUIET


def test_at_a_quiet_hour_the_clock_says_when_the_business_is_busy_again() -> None:
    late_evening = datetime(2026, 12, 7, 23, 0, tzinfo=UTC)  # a Monday, 23:00
    clock = Clock(compress=24, started=time.time(), origin=late_evening)
    described = clock.describe()
    assert described["business_time"] == "Mon 23:00"
    assert described["load_factor"] < QUIET
    # Busy again at 07:00 (0.6 of a busy hour): 8 simulated hours, 20 real minutes.
    assert described["busy_again_in_s"] == pytest.approx(20 * 60, abs=60)


def test_a_busy_hour_has_nothing_to_wait_for_and_flat_load_is_always_busy() -> None:
    morning = datetime(2026, 12, 8, 10, 0, tzinfo=UTC)  # a Tuesday, 10:00
    assert Clock(compress=24, origin=morning).describe()["busy_again_in_s"] == 0
    flat = Clock(compress=0).describe()
    assert flat == {"business_time": None, "load_factor": 1.0, "busy_again_in_s": 0.0}


def test_a_stop_while_users_are_still_starting_stops_the_ones_started() -> None:
    """SIGTERM during the estate's start: stop() comes before start() has started
    every user (it raised joining a thread never started), and no user starts after."""
    unreachable = dict.fromkeys(("crm", "erp", "ext"), "http://127.0.0.1:9")
    traffic = Traffic(dict.fromkeys(SITES, unreachable), users=4, seed=1, clock=Clock(compress=0))
    traffic.users[0].start()  # the first user started, the others not yet
    traffic.stop()
    traffic.start()
    assert [user.ident is not None for user in traffic.users] == [True, False, False, False]
    assert not traffic.users[0].is_alive()
