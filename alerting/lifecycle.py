"""An alert's lifecycle: pending → firing → (acknowledged) → resolved.

The rules are Prometheus's, applied per incident (group key) rather than per
series:

- a condition that starts holding makes the alert *pending*; it fires once the
  condition has held on every evaluation for the rule's ``for`` (at once when
  ``for`` is zero); a pending alert whose condition stops holding is dropped,
  never having been an incident;
- a firing (or acknowledged) alert stays so while the condition holds, and for
  ``keep_firing_for`` after it last held, against flapping and against false
  resolutions when data is briefly missing; then it is *resolved*;
- an evaluation that failed is no evaluation: the caller does not call
  :func:`step` at all, so nothing resolves because the store was down.

:func:`step` is pure (state and clock in, state out) so it is tested with a
fake clock, series in and states out at exact minutes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

PENDING, FIRING, ACKNOWLEDGED, RESOLVED = "pending", "firing", "acknowledged", "resolved"
ACTIVE_STATES = (FIRING, ACKNOWLEDGED)


@dataclass(frozen=True)
class Lifecycle:
    state: str
    pending_since: datetime
    last_active_at: datetime
    started_at: datetime | None = None  # when it fired
    resolved_at: datetime | None = None


@dataclass(frozen=True)
class Transition:
    """The new lifecycle (None: dropped) and the notification it calls for, if any."""

    lifecycle: Lifecycle | None
    notify: str | None = None  # "firing" or "resolved"


def step(
    current: Lifecycle | None,
    active: bool,
    now: datetime,
    for_: timedelta,
    keep_firing_for: timedelta,
) -> Transition:
    """One evaluation at ``now``: does the condition hold (``active``)?"""
    if current is None or current.state == RESOLVED:
        if not active:
            return Transition(None)
        fresh = Lifecycle(PENDING, pending_since=now, last_active_at=now)
        return _maybe_fire(fresh, now, for_)
    if current.state == PENDING:
        if not active:
            return Transition(None)
        return _maybe_fire(replace(current, last_active_at=now), now, for_)
    # firing or acknowledged
    if active:
        return Transition(replace(current, last_active_at=now))
    if now - current.last_active_at >= keep_firing_for:
        return Transition(replace(current, state=RESOLVED, resolved_at=now), notify="resolved")
    return Transition(current)


def _maybe_fire(lifecycle: Lifecycle, now: datetime, for_: timedelta) -> Transition:
    if now - lifecycle.pending_since >= for_:
        return Transition(replace(lifecycle, state=FIRING, started_at=now), notify="firing")
    return Transition(lifecycle)
