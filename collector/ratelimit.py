"""Token buckets per key (a client IP, a RUM key, a tenant), in bounded memory,
and a gate on requests in flight.

Each collector worker keeps its own buckets: with N workers behind one port a
client can get up to N times the rate, which is acceptable for what these limits
are for (a flood from one client must not fill the store). The table of buckets
is bounded; when it is full the longest-idle bucket goes first, and a forgotten
bucket comes back full, which only ever errs on the side of letting through.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

_MAX_BUCKETS = 50_000


class RateLimiter:
    """``rate`` requests per second on average, bursts of up to ``burst``."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic, size: int = _MAX_BUCKETS
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit needs a positive rate and a burst of at least 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._size = size
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def take(self, key: str) -> float:
        """Spend one token of ``key``'s bucket. Returns 0 when allowed, else the
        seconds until a token is there again (for ``Retry-After``)."""
        now = self._clock()
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1:
            self._remember(key, tokens - 1, now)
            return 0.0
        self._remember(key, tokens, now)
        return (1 - tokens) / self.rate

    def waiting(self, key: str) -> float:
        """For limits counted in items a request carries (spans), known only
        after it is read: 0 when ``key`` may send now (it has any credit left),
        else the seconds until it has. Pair with :meth:`spend`."""
        now = self._clock()
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        return 0.0 if tokens > 0 else (1e-3 - tokens) / self.rate

    def spend(self, key: str, cost: float) -> None:
        """Charge ``cost`` to ``key``'s bucket; it may go into debt (one request
        past the limit is let through, the next ones wait the debt off)."""
        now = self._clock()
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        self._remember(key, tokens - cost, now)

    def _remember(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self._size:
            self._buckets.popitem(last=False)


def retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


class RequestGate:
    """At most ``limit`` requests at once; the rest are refused, not queued.

    A worker that queues every request under overload answers each one later
    and later until clients time out and resend (more load); refusing past a
    fixed number in flight keeps latency and memory bounded and tells clients
    to come back (503 with Retry-After).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inside = 0

    @property
    def full(self) -> bool:
        return self.inside >= self.limit

    def enter(self) -> bool:
        if self.inside >= self.limit:
            return False
        self.inside += 1
        return True

    def leave(self) -> None:
        self.inside -= 1
