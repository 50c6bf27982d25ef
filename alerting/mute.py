"""One "mute" interface for silences and maintenance windows.

A :class:`Muter` says whether an alert's labels are muted at an instant.
Silences (made through the API or ``tierscope alerts silence``) and
maintenance windows (stored the same way with kind ``maintenance``, or listed
in the alerting document) are both :class:`Window` s: a time range and label
matchers. A muted alert keeps its lifecycle; only its notifications wait. When
the mute ends and the alert still fires, its notification goes out then.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

Labels = dict[str, list[str]]  # label -> values (an alert names several transactions)
MATCHABLE = ("severity", "service", "bt", "tier", "component", "rule", "kind", "business_service")


class Muter(Protocol):
    def mutes(self, labels: Labels, now: datetime) -> bool: ...


@dataclass(frozen=True)
class Window:
    """Mutes alerts whose labels match every matcher, from ``starts_at`` to ``ends_at``."""

    starts_at: datetime
    ends_at: datetime
    matchers: dict[str, str] = field(default_factory=dict)
    kind: str = "silence"

    def mutes(self, labels: Labels, now: datetime) -> bool:
        if not self.starts_at <= now < self.ends_at:
            return False
        return all(value in labels.get(name, []) for name, value in self.matchers.items())


@dataclass(frozen=True)
class AnyOf:
    """Muted when any of its muters mutes."""

    muters: tuple[Muter, ...]

    def mutes(self, labels: Labels, now: datetime) -> bool:
        return any(muter.mutes(labels, now) for muter in self.muters)


def check_matchers(matchers: dict[str, str]) -> None:
    unknown = sorted(set(matchers) - set(MATCHABLE))
    if unknown:
        raise ValueError(f"unknown matcher label(s) {', '.join(unknown)}; use {', '.join(MATCHABLE)}")


def from_rows(rows: Iterable[dict]) -> list[Window]:
    return [Window(r["starts_at"], r["ends_at"], dict(r["matchers"]), r["kind"]) for r in rows]
