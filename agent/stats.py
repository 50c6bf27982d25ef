"""What the agent counts about itself, and how it tells.

Spans the agent could not deliver are never silent: each loss is counted by
cause, a warning is logged at most once a minute while counts grow, and the
counts are sent to the collector as a ``tierscope.agent.report`` span once it
answers again (:mod:`.queue`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger("tierscope.agent")

LOG_INTERVAL = 60.0  # seconds between two warnings about losses


@dataclass
class AgentStats:
    """Counters of one process (reset in a forked child: each process reports its own)."""

    spans_exported: int = 0
    spans_dropped: int = 0
    """queue full: the oldest span was dropped to make room."""
    spans_failed: int = 0
    """export given up: collector down, refusing or too slow until the deadline passed."""
    spans_rejected: int = 0
    """refused one by one by the collector (``partial_success.rejected_spans``)."""
    export_retries: int = 0
    errors_swallowed: int = 0
    """errors inside the agent that were kept from reaching the application."""
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _logged_at: float = field(default=float("-inf"), repr=False)
    _logged: tuple[int, int, int] = field(default=(0, 0, 0), repr=False)
    _reported: tuple[int, int, int] = field(default=(0, 0, 0), repr=False)

    def add(self, name: str, count: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + count)

    def losses(self) -> tuple[int, int, int]:
        return (self.spans_dropped, self.spans_failed, self.spans_rejected)

    def snapshot(self) -> dict[str, int]:
        return {
            "spans_exported": self.spans_exported,
            "spans_dropped": self.spans_dropped,
            "spans_failed": self.spans_failed,
            "spans_rejected": self.spans_rejected,
            "export_retries": self.export_retries,
            "errors_swallowed": self.errors_swallowed,
        }

    def maybe_log(self) -> bool:
        """Warn about new losses, at most once per :data:`LOG_INTERVAL`; True if it logged."""
        now = self.clock()
        losses = self.losses()
        if losses == self._logged or now - self._logged_at < LOG_INTERVAL:
            return False
        self._logged_at, self._logged = now, losses
        logger.warning(
            "tierscope agent: %d spans dropped (queue full), %d failed to export, %d rejected by the "
            "collector so far (%d exported)",
            *losses,
            self.spans_exported,
        )
        return True

    def unreported(self) -> dict[str, int] | None:
        """Loss counts not yet sent to the collector, or None when nothing changed."""
        losses = self.losses()
        if losses == self._reported:
            return None
        self._reported = losses
        return dict(zip(("spans_dropped", "spans_failed", "spans_rejected"), losses, strict=True))

    def reset(self) -> None:
        """In a forked child: a new process, new counts."""
        self._lock = threading.Lock()
        self.spans_exported = self.spans_dropped = self.spans_failed = self.spans_rejected = 0
        self.export_retries = self.errors_swallowed = 0
        self._logged_at, self._logged, self._reported = float("-inf"), (0, 0, 0), (0, 0, 0)
