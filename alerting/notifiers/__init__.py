"""Notifiers, one module each, and the builder that picks one for a receiver."""

from __future__ import annotations

from tierscope.alerting.notifiers.alertmanager import AlertmanagerNotifier
from tierscope.alerting.notifiers.base import Notifier, Outcome
from tierscope.alerting.notifiers.chat import ChatNotifier
from tierscope.alerting.notifiers.email import EmailNotifier
from tierscope.alerting.notifiers.webhook import WebhookNotifier
from tierscope.alerting.rules import Receiver
from tierscope.alerting.ssrf import Network

__all__ = ["Notifier", "Outcome", "build"]


def build(receiver: Receiver, allowed: list[Network]) -> Notifier:
    if receiver.webhook is not None:
        return WebhookNotifier(receiver.webhook, allowed)
    if receiver.alertmanager is not None:
        return AlertmanagerNotifier(receiver.alertmanager, allowed)
    if receiver.email is not None:
        return EmailNotifier(receiver.email, allowed)
    assert receiver.chat is not None  # the model requires exactly one
    return ChatNotifier(receiver.chat, allowed)
