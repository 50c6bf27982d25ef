"""E-mail over SMTP (the standard library's smtplib, in a worker thread)."""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage
from typing import Any

from tierscope.alerting.notifiers.base import DELIVERED, Outcome, summary_line
from tierscope.alerting.rules import Email
from tierscope.alerting.ssrf import Network, check_host

TIMEOUT_SECONDS = 10


def compose(config: Email, event: str, alert: dict[str, Any]) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = summary_line(event, alert)
    message["From"] = config.sender
    message["To"] = ", ".join(config.to)
    impact = alert.get("impact") or {}
    lines = [
        alert["title"],
        "",
        f"State: {'resolved' if event == 'resolved' else alert['state']}",
        f"Suspected tier: {alert.get('tier') or 'unknown'}; component: {alert.get('component') or 'unknown'}"
        f" (confidence {alert.get('confidence') or 0:.0%})",
        "Transactions: " + "; ".join(f"{s} {b}" for s, b in alert.get("bts", [])),
        f"Users affected: {impact.get('users', 0)}; sessions: {impact.get('sessions', 0)}; "
        f"criticality: {impact.get('criticality') or 'none'}; priority {impact.get('priority', 0)}",
        f"Started: {alert.get('started_at')}; resolved: {alert.get('resolved_at') or '-'}",
        f"Runbook: {alert.get('runbook', '')}",
    ]
    message.set_content("\n".join(lines) + "\n")
    return message


class EmailNotifier:
    def __init__(self, config: Email, allowed: list[Network]) -> None:
        self.config = config
        self.allowed = allowed

    def _send(self, message: EmailMessage) -> None:
        with smtplib.SMTP(self.config.host, self.config.port, timeout=TIMEOUT_SECONDS) as smtp:
            if self.config.starttls:
                smtp.starttls()
            if self.config.username and self.config.password:
                smtp.login(self.config.username, self.config.password)
            smtp.send_message(message)

    async def send(self, event: str, alert: dict[str, Any]) -> Outcome:
        try:
            check_host(self.config.host, self.config.port, self.allowed)
        except ValueError as exc:
            return Outcome(False, False, str(exc))
        try:
            await asyncio.to_thread(self._send, compose(self.config, event, alert))
        except smtplib.SMTPResponseException as exc:
            # 4xx: the server asks to try later; 5xx: it will not take this message.
            return Outcome(False, 400 <= exc.smtp_code < 500, f"SMTP {exc.smtp_code}")
        except smtplib.SMTPRecipientsRefused:
            return Outcome(False, False, "SMTP: every recipient was refused")
        except (OSError, smtplib.SMTPException) as exc:
            return Outcome(False, True, f"SMTP {self.config.host}:{self.config.port}: {type(exc).__name__}")
        return DELIVERED
