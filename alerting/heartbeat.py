"""The watchdog: a heartbeat that stops when the alerting pipeline goes silent.

An alerting system that has stopped cannot say so: its silence looks like
health. So, as Prometheus users route an always-firing ``Watchdog`` alert to a
dead man's switch, the leading evaluator sends each tenant that configures a
``heartbeat`` a beat every ``every`` to one receiver, and an outside service
(a dead man's switch, a cron monitor) pages when the beats stop. They stop when:

- the evaluator process is dead, or not leading anywhere (collector down);
- the tenant's evaluation failed (the store is unreachable, a bad document);
- the pipeline is silent: no minute of data newer than ``max_silence`` (the
  agents, the collector or trace processing have stopped delivering).

A beat is sent directly, not through the outbox: a beat that could not be
delivered is worthless later, and missing beats are the message. A webhook
gets ``event: heartbeat``; Alertmanager gets the alert ``TierscopeWatchdog``,
firing, valid for 15 minutes, so Alertmanager resolves it if beats stop.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from tierscope.alerting import notifiers
from tierscope.alerting.rules import AlertingConfig, from_document
from tierscope.alerting.ssrf import Network
from tierscope.store import Database
from tierscope.store import alerting as store

_logger = logging.getLogger(__name__)
WATCHDOG = "TierscopeWatchdog"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def payload(tenant_id: int, now: datetime, latest: datetime, base: str) -> dict[str, Any]:
    """The beat, shaped like an alert (receivers parse one kind of object)."""
    return {
        "id": 0,
        "rule": WATCHDOG,
        "severity": "info",
        "state": "firing",
        "group_key": "watchdog",
        "tenant": tenant_id,
        "title": f"tierscope alerting is alive; data up to {_iso(latest)}",
        "bts": [],
        "started_at": _iso(now),
        "latest_data_at": _iso(latest),
        "runbook": f"{base}#watchdog",
    }


class Heartbeats:
    """Sends the beats of the tenants an evaluation cycle judged; remembers
    when each was last sent (in memory: a new leader beats at once)."""

    def __init__(self, database: Database, allowed: list[Network], runbook_base: str) -> None:
        self.database = database
        self.allowed = allowed
        self.runbook_base = runbook_base
        self.sent: dict[int, datetime] = {}

    async def beat(self, tenants: list[int], now: datetime) -> int:
        """Beat for each of ``tenants`` (evaluated without failure) that is due; returns how many."""
        sent = 0
        for tenant_id in tenants:
            async with self.database.connection() as conn:
                stored = await store.get_config(conn, tenant_id)
                config = from_document(stored) if stored else AlertingConfig()
                if config.heartbeat is None:
                    continue
                last = self.sent.get(tenant_id)
                if last is not None and now - last < config.heartbeat.every:
                    continue
                latest = await store.latest_minute(conn, tenant_id, now)
            if latest is None or now - latest > config.heartbeat.max_silence:
                _logger.warning(
                    "tenant %d: no data since %s; its heartbeat is withheld so its watchdog notices",
                    tenant_id,
                    latest,
                )
                continue
            receiver = config.receiver(config.heartbeat.receiver)
            if receiver is None:
                continue
            outcome = await notifiers.build(receiver, self.allowed).send(
                "heartbeat", payload(tenant_id, now, latest, self.runbook_base)
            )
            if outcome.delivered:
                self.sent[tenant_id] = now
                sent += 1
            else:
                _logger.warning("tenant %d: heartbeat not delivered: %s", tenant_id, outcome.error)
        return sent
