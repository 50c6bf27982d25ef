"""Prometheus Alertmanager, through its v2 API (``POST /api/v2/alerts``).

Each alert becomes one Alertmanager alert whose labels identify the incident
(``alertname`` is the rule, ``group_key`` our stable key) and whose
annotations carry the title, localisation, impact and runbook. A resolve is
the same alert with ``endsAt`` set to when it resolved. A firing alert is sent
with an ``endsAt`` well ahead (Alertmanager would otherwise resolve it after its
``resolve_timeout``); the evaluator re-sends firing alerts to Alertmanager
receivers before that, as Prometheus does.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from tierscope.alerting.notifiers.base import Outcome, post_json
from tierscope.alerting.rules import AlertmanagerTarget
from tierscope.alerting.ssrf import Network

VALID_FOR = timedelta(minutes=15)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def to_alertmanager(event: str, alert: dict[str, Any], now: datetime) -> dict[str, Any]:
    labels = {
        "alertname": alert["rule"],
        "severity": alert["severity"],
        "group_key": alert["group_key"],
        "tenant": alert["tenant"],
    }
    for name in ("service", "tier", "component"):
        if alert.get(name):
            labels[name] = str(alert[name])[:200]
    impact = alert.get("impact") or {}
    annotations = {
        "summary": alert["title"],
        "runbook_url": alert.get("runbook", ""),
        "bts": ", ".join(f"{s} {b}" for s, b in alert.get("bts", [])),
        "users": str(impact.get("users", 0)),
        "priority": str(impact.get("priority", 0)),
    }
    ends = alert.get("resolved_at") if event == "resolved" else None
    return {
        "labels": labels,
        "annotations": annotations,
        "startsAt": alert.get("started_at") or _iso(now),
        "endsAt": ends or _iso(now + VALID_FOR),
        "generatorURL": alert.get("link", ""),
    }


class AlertmanagerNotifier:
    def __init__(self, config: AlertmanagerTarget, allowed: list[Network]) -> None:
        self.config = config
        self.allowed = allowed

    async def send(self, event: str, alert: dict[str, Any]) -> Outcome:
        url = self.config.url.rstrip("/") + "/api/v2/alerts"
        body = json.dumps([to_alertmanager(event, alert, datetime.now(UTC))]).encode()
        return await post_json(url, body, {}, self.allowed)
