"""Delivery of the outbox: at least once, with retries and exponential back-off.

A notification row stays in the store until its receiver accepts it (2xx, or
SMTP's 250). Each attempt that fails with a retryable error (5xx, 429, a
refused connection, a timeout) is tried again after ``initial × 2^attempts``,
capped at ``maximum``; one that cannot succeed (a 4xx, an address refused by
the SSRF check, a receiver removed from the configuration) is parked far in
the future with its error kept. Each row is sent in a transaction of its own
that holds it locked (``FOR UPDATE SKIP LOCKED``), so two senders never send it
twice at once; a crash between the send and the commit sends it again, which
is what at-least-once means (receivers deduplicate by ``id`` and
``group_key``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from tierscope.alerting import notifiers
from tierscope.alerting.rules import AlertingConfig, from_document
from tierscope.alerting.ssrf import Network
from tierscope.store import Database
from tierscope.store import alerting as store

_logger = logging.getLogger(__name__)
PARKED = timedelta(days=3650)


@dataclass
class Backoff:
    initial: timedelta
    maximum: timedelta

    def after(self, attempts: int) -> timedelta:
        return min(self.maximum, self.initial * (2 ** max(attempts - 1, 0)))


async def deliver_due(
    database: Database, now: datetime, backoff: Backoff, allowed: list[Network], limit: int = 100
) -> int:
    """Send the notifications due at ``now``; returns how many were delivered."""
    delivered = 0
    configs: dict[int, AlertingConfig] = {}
    for _ in range(limit):
        async with database.connection() as conn, conn.transaction():
            due = await store.due_notifications(conn, now, limit=1)
            if not due:
                break
            item = due[0]
            tenant_id = item["tenant_id"]
            if tenant_id not in configs:
                stored = await store.get_config(conn, tenant_id)
                configs[tenant_id] = from_document(stored) if stored else AlertingConfig()
            receiver = configs[tenant_id].receiver(item["receiver"])
            if receiver is None:
                await store.failed(conn, item["id"], "the receiver is no longer configured", now + PARKED)
                continue
            outcome = await notifiers.build(receiver, allowed).send(item["event"], item["payload"])
            if outcome.delivered:
                await store.delivered(conn, item["id"], now)
                delivered += 1
                continue
            attempts = item["attempts"] + 1
            retry_at = now + (backoff.after(attempts) if outcome.retryable else PARKED)
            _logger.warning(
                "notification %d to %s failed (attempt %d): %s",
                item["id"],
                item["receiver"],
                attempts,
                outcome.error,
            )
            await store.failed(conn, item["id"], outcome.error or "failed", retry_at)
    return delivered
