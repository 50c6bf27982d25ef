"""OTLP/HTTP protobuf export to the collector: retries, back-pressure, partial success.

Runs only on the agent's exporter thread, never on the application's. One
keep-alive connection (``http.client``, which no instrumentation wraps, so the
agent never traces its own exports). What the collector says is honoured:

- ``200``: done; ``partial_success.rejected_spans`` is read and counted.
- ``429`` / ``502`` / ``503`` / ``504``, a refused connection or a timeout:
  retried after ``Retry-After`` when given, else after an exponential backoff
  with jitter, as long as the batch's deadline allows; then the batch is given
  up and counted.
- any other status: the batch can never succeed (bad key, too large); it is
  counted and not retried.
"""

from __future__ import annotations

import email.utils
import gzip
import http.client
import logging
import random
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

logger = logging.getLogger("tierscope.agent")

RETRYABLE = frozenset({429, 502, 503, 504})
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 8.0


@dataclass(frozen=True)
class Outcome:
    """How one batch ended: delivered (maybe with spans rejected), or given up."""

    delivered: bool
    rejected: int = 0
    message: str = ""
    retries: int = 0


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _varint(data: bytes, offset: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[offset]
        offset += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, offset
        shift += 7


def parse_partial_success(body: bytes) -> tuple[int, str]:
    """``(rejected_spans, error_message)`` of an ``ExportTraceServiceResponse``; (0, "") if none."""
    rejected, message = 0, ""
    try:
        offset = 0
        while offset < len(body):
            tag, offset = _varint(body, offset)
            if tag == 0x0A:  # partial_success
                length, offset = _varint(body, offset)
                inner, end = offset, offset + length
                while inner < end:
                    field, inner = _varint(body, inner)
                    if field == 0x08:
                        rejected, inner = _varint(body, inner)
                    elif field == 0x12:
                        size, inner = _varint(body, inner)
                        message = body[inner : inner + size].decode("utf-8", "replace")
                        inner += size
                    else:
                        break
                offset = end
            else:
                break
    except IndexError:
        pass
    return rejected, message


class OtlpHttpSender:
    """Sends encoded ``ExportTraceServiceRequest`` bodies to one URL.

    Args:
        url: the collector's ``.../v1/traces``.
        ingest_key: sent as ``Authorization: Bearer``.
        headers: more headers (``OTEL_EXPORTER_OTLP_HEADERS``).
        compression: "gzip" or "none".
        request_timeout: seconds for one HTTP request.
    """

    def __init__(
        self,
        url: str,
        *,
        ingest_key: str | None = None,
        headers: dict[str, str] | None = None,
        compression: str = "gzip",
        request_timeout: float = 10.0,
    ) -> None:
        parts = urlsplit(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (443 if self._https else 80)
        self._path = (parts.path or "/v1/traces") + (f"?{parts.query}" if parts.query else "")
        self._headers = {"Content-Type": "application/x-protobuf", "User-Agent": "tierscope-agent"}
        self._headers.update(headers or {})
        if ingest_key:
            self._headers["Authorization"] = f"Bearer {ingest_key}"
        self._gzip = compression == "gzip"
        if self._gzip:
            self._headers["Content-Encoding"] = "gzip"
        self.request_timeout = request_timeout
        self._connection: http.client.HTTPConnection | None = None
        self.cutoff = float("inf")
        """An absolute monotonic time no export may outlive (set at shutdown)."""
        self.wakeup = threading.Event()
        """Set to cut a backoff wait short (shutdown)."""

    def reset(self) -> None:
        """Forget the connection (after a fork it belongs to the parent)."""
        self._connection = None
        self.wakeup = threading.Event()
        self.cutoff = float("inf")

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except OSError:
                pass
            self._connection = None

    def _request(self, body: bytes, timeout: float) -> tuple[int, str | None, bytes]:
        if self._connection is None:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._connection = kind(self._host, self._port, timeout=timeout)
        connection = self._connection
        connection.timeout = timeout
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        try:
            connection.request("POST", self._path, body=body, headers=self._headers)
            response = connection.getresponse()
            data = response.read()
        except BaseException:
            self.close()
            raise
        if response.getheader("connection", "").lower() == "close":
            self.close()
        return response.status, response.getheader("retry-after"), data

    def send(self, body: bytes, deadline: float) -> Outcome:
        """Deliver one batch, retrying within ``deadline`` (absolute, ``time.monotonic``)."""
        if self._gzip:
            body = gzip.compress(body, compresslevel=1)  # cheap: spans compress well anyway
        retries = 0
        backoff = FIRST_BACKOFF
        while True:
            limit = min(deadline, self.cutoff)
            remaining = limit - time.monotonic()
            if remaining <= 0:
                return Outcome(False, message="deadline passed", retries=retries)
            wait: float | None
            try:
                status, retry_after, data = self._request(body, min(self.request_timeout, remaining))
            except (OSError, http.client.HTTPException) as error:
                status, wait, problem = 0, None, f"{type(error).__name__}: {error}"
            else:
                if 200 <= status < 300:
                    rejected, message = parse_partial_success(data)
                    return Outcome(True, rejected=rejected, message=message, retries=retries)
                if status not in RETRYABLE:
                    return Outcome(False, message=f"HTTP {status}: {data[:200]!r}", retries=retries)
                wait, problem = parse_retry_after(retry_after), f"HTTP {status}"
            if wait is None:
                wait = backoff * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not security
                backoff = min(backoff * 2, MAX_BACKOFF)
            if time.monotonic() + wait >= min(deadline, self.cutoff):
                return Outcome(False, message=f"{problem}; no time left to retry", retries=retries)
            retries += 1
            if self.wakeup.wait(wait):
                return Outcome(False, message=f"{problem}; shutting down", retries=retries)
