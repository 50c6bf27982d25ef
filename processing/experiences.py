"""Experiences joined with their traces: one user action split into tiers.

A page load names its server trace through the ``Server-Timing: traceparent``
of its navigation entry; an in-page fetch or XHR through the ``traceparent``
the RUM script added to it. Beacons and traces arrive in either order: an
experience stays *pending* until processing has summarized its trace, and
waits at most ``TIERSCOPE_RUM_JOIN_WAIT`` before it counts without one.

How an experience's time is split (all from the browser's own clock, so no
clock skew between browser and server enters):

- ``browser`` = end - responseEnd: parsing, scripts and rendering after the
  response, and fetching the style sheets and scripts the page names (so a
  slow link adds to it as well as to ``network``); zero for a request, whose
  experience ends with its response;
- server time = the trace's entry span duration, never more than the browser
  waited for it (responseEnd - requestStart);
- ``network`` = responseEnd - server time: redirects, DNS, connect, TLS, the
  request and response on the wire, the WAN;
- the server's tiers = the trace's self time per tier, scaled to the server
  time (parallel children or work after the response can make the self times
  add up to more than the entry's duration).

So the tiers add up to the experience's duration. Without a trace, the server
time is responseStart - requestStart (the wait for the first byte) and is
reported as ``server``.

Finished experiences are then added to the per-minute rollups
(processing/rum_rollup.py) once their figures are final: a request at once, a
page load when its page-hide beacon brought the final Web Vitals or
``TIERSCOPE_RUM_ROLLUP_WAIT`` after it was finished. The rollup rows and the
experiences' ``rolled_up`` mark are committed together, so each experience is
counted exactly once, whatever kills the joiner; a beacon changing an
experience after that leaves the rollups alone (like a late span).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from psycopg import AsyncConnection

from tierscope.collector.tiers import TIERS
from tierscope.config import Settings
from tierscope.processing import rum_rollup
from tierscope.store import Database, StoreError, rum_rollups
from tierscope.store import rum as store

_logger = logging.getLogger(__name__)
_SERVER_TIERS = [tier for tier in TIERS if tier not in ("browser", "network")]
_EXPIRE_EVERY = 600  # rounds between deletions of experiences past their retention


def _ms(value: float) -> float:
    return round(max(0.0, value), 3)


def split_tiers(
    timing: Mapping[str, float], duration_ms: float, trace: tuple[int, Sequence[int]] | None
) -> dict[str, float]:
    """Milliseconds per tier of one experience; they add up to ``duration_ms``.

    Args:
        timing: the beacon's marks (ms from the experience's start).
        duration_ms: the experience's end-to-end time.
        trace: (entry duration in µs, self time per tier in µs in the order of
            ``TIERS``) of the joined trace, or None.
    """
    response_end = min(float(timing.get("responseEnd", duration_ms)), duration_ms)
    request_start = float(timing.get("requestStart") or 0.0)
    response_start = float(timing.get("responseStart") or 0.0)
    waited = max(0.0, response_end - request_start)
    tiers = {"browser": _ms(duration_ms - response_end)}
    if trace is None:
        server = max(0.0, response_start - request_start) if response_start and request_start else 0.0
        server = min(server, waited)
        tiers["network"] = _ms(response_end - server)
        tiers["server"] = _ms(server)
        return tiers
    entry_us, tier_us = trace
    server = min(entry_us / 1000.0, waited)
    tiers["network"] = _ms(response_end - server)
    by_tier = dict(zip(TIERS, tier_us, strict=False))
    total_us = sum(by_tier.get(tier, 0) for tier in _SERVER_TIERS)
    for tier in _SERVER_TIERS:
        share = by_tier.get(tier, 0)
        if share and total_us:
            tiers[tier] = _ms(server * share / total_us)
    if not total_us and server:
        tiers["app"] = _ms(server)
    return tiers


def error_owner(status: int | None, trace_error_tier: str | None, traced: bool = False) -> str | None:
    """The tier a failed experience is attributed to (None: not failed, or no owner known).

    A failed trace names its own (the tier of the span the error came from); a
    request that got no answer (status 0) failed on the way, as did a 5xx that
    the server's trace did not see (a proxy or gateway in between); an untraced
    5xx is the server's.
    """
    if trace_error_tier is not None:
        return trace_error_tier if trace_error_tier in TIERS else None
    if status == 0:
        return "network"
    if status is not None and status >= 500:
        return "network" if traced else "server"
    return None


class ExperienceJoiner:
    """Finishes pending experiences, with their trace or after the wait."""

    def __init__(self, database: Database, settings: Settings, interval: float = 1.0) -> None:
        self.database = database
        self.settings = settings
        self.interval = interval
        self._rounds = 0
        self._names = rum_rollup.NameBudget()

    async def round(self) -> int:
        """Join what can be joined now, and roll up what is final; returns how many
        experiences were finished or rolled up."""
        finished = 0
        async with self.database.connection() as conn:
            async with conn.transaction():
                joined = await store.pending_with_traces(conn)
                await store.finish(conn, [self._joined(row) for row in joined])
                finished += len(joined)
            async with conn.transaction():
                alone = await store.pending_past(conn, self.settings.rum_join_wait)
                await store.finish(
                    conn,
                    [
                        (
                            row["tenant_id"],
                            row["id"],
                            "untraced",
                            None,
                            None,
                            split_tiers(row["timing"], row["duration_ms"], None),
                            False,
                            error_owner(row["status"], None),
                        )
                        for row in alone
                    ],
                )
                finished += len(alone)
            finished += await self.roll_up(conn)
            self._rounds += 1
            if self._rounds % _EXPIRE_EVERY == 1:
                await store.expire(conn, self.settings.retention_traces)
        return finished

    async def roll_up(self, conn: AsyncConnection) -> int:
        """Add the finished experiences whose figures are final to the rollups.

        The rollup rows and the experiences' ``rolled_up`` mark are committed in
        one transaction: killed at any moment, the joiner leaves both or neither,
        and each experience is counted exactly once.
        """
        apdex_t_ms = self.settings.rum_apdex_t.total_seconds() * 1000
        async with conn.transaction():
            ready = await store.ready_to_roll_up(conn, self.settings.rum_rollup_wait)
            if not ready:
                return 0
            await rum_rollups.take_write_turn(conn)
            for tenant in {int(row["tenant_id"]) for row in ready} - self._names.known.keys():
                self._names.known[tenant] = await rum_rollups.known_names(conn, tenant)
            figures = rum_rollup.roll_up(ready, apdex_t_ms, self._names)
            try:
                await rum_rollup.write(conn, figures)
                await store.mark_rolled_up(conn, [(row["tenant_id"], row["id"]) for row in ready])
            except BaseException:
                self._names.known.clear()  # may hold names that are rolled back: load them again
                raise
        return len(ready)

    @staticmethod
    def _joined(row: Mapping[str, Any]) -> tuple[Any, ...]:
        tiers = split_tiers(row["timing"], row["duration_ms"], (row["trace_duration_us"], row["tier_us"]))
        owner = error_owner(row["status"], row["error_tier"] if row["error"] else None, traced=True)
        return (row["tenant_id"], row["id"], "joined", row["service"], row["bt"], tiers, row["error"], owner)

    async def run(self, stop: asyncio.Event) -> None:
        """Join every ``interval`` until ``stop`` is set; a store outage pauses it."""
        while not stop.is_set():
            try:
                while await self.round() >= 1000:
                    pass  # behind: go on at once
            except (StoreError, OSError) as exc:
                _logger.warning("joining experiences paused: %s", exc)
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.interval)
            except TimeoutError:
                pass
