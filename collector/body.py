"""Reading request bodies within limits: size after decompression, memory, time.

The body is read as a stream and decompressed as it arrives, so an oversized
or decompression-bomb body is refused (413) as soon as it passes the limit,
without ever being held whole. Every byte held is also counted against a
budget shared by all requests in flight, which bounds the collector's memory
under load: past it, requests are refused with 503 and retried later. And the
whole body must arrive within a deadline: a client trickling its body a byte
at a time would otherwise hold its connection (and the bytes it sent) for
ever; enough of them starve everyone else (slow-body flood).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator

# Decompress in steps of at most this many bytes so that no single step can
# produce more than the limit allows.
_STEP = 1 << 20


class BodyTooLarge(Exception):
    """The body exceeds the size limit (after decompression)."""


class BadEncoding(Exception):
    """The body is not valid for its Content-Encoding (e.g. truncated gzip)."""


class Saturated(Exception):
    """Too many bytes are in flight already; try again later."""


class BodyTimeout(Exception):
    """The body did not arrive in full within the deadline (answer 408)."""


class InflightBudget:
    """Bytes of request bodies held at once, across all requests."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, amount: int) -> None:
        if self.used + amount > self.limit:
            raise Saturated(f"{self.used} bytes of requests in flight; limit {self.limit}")
        self.used += amount

    def give_back(self, amount: int) -> None:
        self.used -= amount


class BodyReader:
    """Reads one body; ``held`` is what it took from the budget (give it back after).
    ``timeout``: seconds the whole body may take to arrive (None: no deadline)."""

    def __init__(self, budget: InflightBudget, max_size: int, timeout: float | None = None) -> None:
        self.budget = budget
        self.max_size = max_size
        self.timeout = timeout
        self.held = 0

    def _grow(self, size: int) -> None:
        if size > self.max_size:
            raise BodyTooLarge(f"body is larger than the limit of {self.max_size} bytes")
        self.budget.take(size - self.held)
        self.held = size

    async def read(self, chunks: AsyncIterator[bytes], *, gzip: bool) -> bytes:
        if self.timeout is None:
            return await self._read(chunks, gzip=gzip)
        try:
            async with asyncio.timeout(self.timeout):
                return await self._read(chunks, gzip=gzip)
        except TimeoutError:
            raise BodyTimeout(
                f"the request body did not arrive in full within {self.timeout:g} s; "
                "send it faster or in smaller requests"
            ) from None

    async def _read(self, chunks: AsyncIterator[bytes], *, gzip: bool) -> bytes:
        parts: list[bytes] = []
        size = 0
        inflater = _gzip() if gzip else None
        async for chunk in chunks:
            if not chunk:
                continue
            if inflater is None:
                size += len(chunk)
                self._grow(size)
                parts.append(chunk)
                continue
            pending = chunk
            while pending:
                if inflater.eof:
                    # RFC 1952: a gzip file may hold several members back to back.
                    inflater = _gzip()
                try:
                    out = inflater.decompress(pending, _STEP)
                except zlib.error as exc:
                    raise BadEncoding(f"body is not valid gzip: {exc}") from None
                size += len(out)
                self._grow(size)
                parts.append(out)
                pending = inflater.unconsumed_tail or inflater.unused_data
        if inflater is not None and not inflater.eof:
            raise BadEncoding("gzip body is truncated")
        return b"".join(parts)


def _gzip() -> zlib._Decompress:
    return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
