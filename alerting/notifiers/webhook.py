"""The generic webhook: our alert as JSON, signed with HMAC-SHA256.

Headers: ``X-Tierscope-Timestamp`` (unix seconds) and
``X-Tierscope-Signature: sha256=<hex>`` over ``<timestamp>.<body>``. A
receiver recomputes the signature with the shared secret and refuses a
mismatch or a timestamp more than five minutes away (a replay): :func:`verify`
does exactly that. ``group_key`` and ``id`` let it deduplicate (delivery is at
least once).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from tierscope.alerting.notifiers.base import Outcome, post_json
from tierscope.alerting.rules import Webhook
from tierscope.alerting.ssrf import Network

TOLERANCE_SECONDS = 300


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signed: str, now: float | None = None) -> bool:
    """True when ``signed`` is the signature of ``body`` at a timestamp within five minutes."""
    try:
        moment = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - moment) > TOLERANCE_SECONDS:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), signed)


class WebhookNotifier:
    def __init__(self, config: Webhook, allowed: list[Network]) -> None:
        self.config = config
        self.allowed = allowed

    async def send(self, event: str, alert: dict[str, Any]) -> Outcome:
        body = json.dumps({"version": "1", "event": event, "alert": alert}, sort_keys=True).encode()
        timestamp = str(int(time.time()))
        headers = {"x-tierscope-timestamp": timestamp, "x-tierscope-event": event}
        if self.config.secret:
            headers["x-tierscope-signature"] = signature(self.config.secret, timestamp, body)
        return await post_json(self.config.url, body, headers, self.allowed)
