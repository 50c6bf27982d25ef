"""What every notifier shares: the outcome of a send and the HTTP retry rule.

A notifier returns a :class:`Outcome` instead of raising: delivered, or
failed and whether trying again may help (a 5xx, a 429 or a refused
connection may; a 400 will not). Errors never carry the receiver's full URL,
which often holds a secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from tierscope.alerting.ssrf import Network, check_url, redact

TIMEOUT = httpx.Timeout(10.0, connect=5.0)


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    retryable: bool = False
    error: str | None = None


DELIVERED = Outcome(True)


class Notifier(Protocol):
    async def send(self, event: str, alert: dict[str, Any]) -> Outcome: ...


def check_status(response: httpx.Response, url: str) -> Outcome:
    if 200 <= response.status_code < 300:
        return DELIVERED
    retryable = response.status_code == 429 or response.status_code >= 500
    return Outcome(False, retryable, f"{redact(url)} answered {response.status_code}")


async def post_json(url: str, body: bytes, headers: dict[str, str], allowed: list[Network]) -> Outcome:
    """POST ``body`` after checking the address again (it may resolve elsewhere since it was saved)."""
    try:
        check_url(url, allowed)
    except ValueError as exc:
        return Outcome(False, False, str(exc))
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False, trust_env=False) as client:
            response = await client.post(
                url, content=body, headers={"content-type": "application/json", **headers}
            )
    except httpx.HTTPError as exc:
        return Outcome(False, True, f"{redact(url)}: {type(exc).__name__}")
    return check_status(response, url)


def summary_line(event: str, alert: dict[str, Any]) -> str:
    state = "RESOLVED" if event == "resolved" else "FIRING"
    return f"[{state}:{alert.get('severity_name') or alert['severity']}] {alert['title']}"
