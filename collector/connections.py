"""Connections that never finish their request head are closed (slowloris).

uvicorn closes a keep-alive connection that stays idle *between* requests
(``timeout_keep_alive``), but a connection that is opened and then sends
nothing, or sends its request line and headers a byte at a time, is kept for
ever: enough of them exhaust the process's file descriptors and starve every
other client. :class:`HeadDeadlineProtocol` is uvicorn's own HTTP protocol with
one addition: from the moment a connection opens, and again whenever a new
request starts on it, the request head (line and headers) must be complete
within ``TIERSCOPE_HEADER_TIMEOUT``, or the connection is closed. A slow *body*
is bounded elsewhere (``body.py``): its bytes count against the in-flight
budget, it must arrive within ``TIERSCOPE_BODY_TIMEOUT`` (else 408 and the
connection is closed), and it holds no ingest slot while it arrives.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_logger = logging.getLogger(__name__)


@functools.cache
def header_timeout() -> float:
    """Read once per worker process, from the settings (environment)."""
    from tierscope.config import load_settings

    return load_settings().header_timeout.total_seconds()


class HeadDeadlineProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(header_timeout(), self._head_overdue)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_overdue(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            _logger.info("closing a connection whose request head did not arrive in time")
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        # From here uvicorn's keep-alive timeout watches the idle connection.
        self._disarm()
        super().on_response_complete()
