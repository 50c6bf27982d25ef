"""A chat-style webhook (Slack-compatible JSON: ``text`` plus one attachment)."""

from __future__ import annotations

import json
from typing import Any

from tierscope.alerting.notifiers.base import Outcome, post_json, summary_line
from tierscope.alerting.rules import Chat
from tierscope.alerting.ssrf import Network

COLOURS = {"critical": "#d1242f", "warning": "#d4a72c", "info": "#0969da", "resolved": "#1a7f37"}


def message(event: str, alert: dict[str, Any]) -> dict[str, Any]:
    impact = alert.get("impact") or {}
    fields = [
        {"title": "Tier", "value": alert.get("tier") or "unknown", "short": True},
        {"title": "Component", "value": alert.get("component") or "unknown", "short": True},
        {"title": "Users affected", "value": str(impact.get("users", 0)), "short": True},
        {"title": "Criticality", "value": impact.get("criticality") or "none", "short": True},
    ]
    return {
        "text": summary_line(event, alert),
        "attachments": [
            {
                "color": COLOURS["resolved" if event == "resolved" else alert["severity"]],
                "fields": fields,
                "footer": f"runbook: {alert.get('runbook', '')}",
            }
        ],
    }


class ChatNotifier:
    def __init__(self, config: Chat, allowed: list[Network]) -> None:
        self.config = config
        self.allowed = allowed

    async def send(self, event: str, alert: dict[str, Any]) -> Outcome:
        body = json.dumps(message(event, alert)).encode()
        return await post_json(self.config.url, body, {}, self.allowed)
