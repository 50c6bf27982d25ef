"""The bounded export queue: the only thing the application's threads touch.

Ending a span appends it to a ``deque`` (no I/O, no encoding on the
application's thread, and a lock only to count a dropped span). When the queue
is full the oldest span is dropped and counted: recent spans matter more, and
the application never waits. One daemon thread per process encodes and sends
batches.

Processes: the thread is started on the first span, and again in a forked
child (``os.register_at_fork``), which also starts with an empty queue (the
parent's pending spans are the parent's to send) and its own counters, so
gunicorn ``--preload`` and other forking servers export from every worker.
At exit the queue is flushed within ``shutdown_timeout``, never longer.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from tierscope.agent.encode import SpanEncoder
from tierscope.agent.export import OtlpHttpSender
from tierscope.agent.guard import swallowed
from tierscope.agent.stats import AgentStats

logger = logging.getLogger("tierscope.agent")


class ExportQueue(SpanProcessor):
    """A span processor that batches finished spans to an :class:`OtlpHttpSender`.

    Args:
        encoder: turns a batch into an OTLP request body (and scrubs it).
        sender: delivers bodies.
        stats: the counters to keep.
        max_queue_size: spans held at most; beyond, the oldest are dropped.
        max_batch_size: spans per request.
        schedule_delay: seconds between sends of partial batches.
        export_deadline: seconds one batch may take, retries included.
        shutdown_timeout: seconds the flush at exit may take.
        report: called (on the exporter thread) with loss counts not yet reported,
            after a successful export.
    """

    def __init__(
        self,
        encoder: SpanEncoder,
        sender: OtlpHttpSender,
        stats: AgentStats,
        *,
        max_queue_size: int = 2048,
        max_batch_size: int = 512,
        schedule_delay: float = 1.0,
        export_deadline: float = 30.0,
        shutdown_timeout: float = 5.0,
        report: Callable[[dict[str, int]], None] | None = None,
    ) -> None:
        self._encoder = encoder
        self._sender = sender
        self._stats = stats
        self._max_queue_size = max_queue_size
        self._max_batch_size = max_batch_size
        self._schedule_delay = schedule_delay
        self._export_deadline = export_deadline
        self._shutdown_timeout = shutdown_timeout
        self._report = report
        self._closed = False
        self._fresh()
        weak = weakref.WeakMethod(self._after_fork_in_child)

        def after_fork() -> None:
            method = weak()
            if method is not None:
                method()

        os.register_at_fork(after_in_child=after_fork)

    def _fresh(self) -> None:
        self._queue: deque[ReadableSpan] = deque(maxlen=self._max_queue_size)
        self._wake = threading.Event()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._flush_waiters: list[threading.Event] = []
        self._pid = os.getpid()
        # Spans of the batch the exporter thread is sending: counted by whoever settles
        # them first, the thread when the send ends, or shutdown when it gives up waiting.
        self._in_flight = 0
        self._flight_lock = threading.Lock()

    def _after_fork_in_child(self) -> None:
        try:
            self._fresh()
            self._sender.reset()
            self._stats.reset()
            self._encoder.after_fork()
        except Exception as error:
            swallowed(error)

    # -- the application's side ----------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        try:
            if not span.context.trace_flags.sampled:
                return
            queue = self._queue
            if self._closed:
                self._stats.add("spans_dropped")
                return
            if len(queue) >= self._max_queue_size:
                self._stats.add("spans_dropped")  # the deque pushes out the oldest
            queue.append(span)
            if self._thread is None:
                self._start()
            if len(queue) >= self._max_batch_size:
                self._wake.set()
        except Exception as error:
            swallowed(error)

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="tierscope-agent-export", daemon=True)
                thread.start()
                self._thread = thread

    # -- the exporter thread -------------------------------------------------------------------

    def _run(self) -> None:
        # The thread may have been started inside a request, and the threading
        # instrumentation hands it that request's context: start from an empty one,
        # with instrumentation suppressed, so nothing the exporter does is traced.
        otel_context.attach(
            otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True, Context())
        )
        wake = self._wake
        while not self._closed:
            wake.wait(self._schedule_delay)
            wake.clear()
            self._drain()
        self._drain()  # the final flush, within the shutdown cutoff
        self._release_flush_waiters()

    def _drain(self) -> None:
        try:
            while self._queue:
                batch: list[ReadableSpan] = []
                popleft = self._queue.popleft
                while len(batch) < self._max_batch_size:
                    try:
                        batch.append(popleft())
                    except IndexError:
                        break
                if batch:
                    self._in_flight = len(batch)
                    try:
                        self._export(batch)
                    except Exception as error:
                        # The batch has left the queue: unless counted here it is lost silently.
                        if self._settle():
                            self._stats.add("spans_failed", len(batch))
                        swallowed(error)
            self._release_flush_waiters()
            self._stats.maybe_log()
        except Exception as error:
            swallowed(error)

    def _release_flush_waiters(self) -> None:
        waiters, self._flush_waiters = self._flush_waiters, []
        for event in waiters:
            event.set()

    def _settle(self) -> bool:
        """Take the count of the batch in flight; False if shutdown has already taken it."""
        with self._flight_lock:
            owned, self._in_flight = self._in_flight, 0
        return owned > 0

    def _export(self, batch: list[ReadableSpan]) -> None:
        try:
            body = self._encoder.encode(batch)
        except Exception as error:
            if self._settle():
                self._stats.add("spans_failed", len(batch))
            swallowed(error)
            return
        outcome = self._sender.send(body, time.monotonic() + self._export_deadline)
        if not self._settle():
            return  # shutdown stopped waiting and counted the batch as failed
        if outcome.retries:
            self._stats.add("export_retries", outcome.retries)
        if not outcome.delivered:
            self._stats.add("spans_failed", len(batch))
            logger.debug("tierscope agent: %d spans not delivered: %s", len(batch), outcome.message)
            return
        self._stats.add("spans_exported", len(batch) - outcome.rejected)
        if outcome.rejected:
            self._stats.add("spans_rejected", outcome.rejected)
            logger.debug(
                "tierscope agent: collector rejected %d spans: %s", outcome.rejected, outcome.message
            )
        if self._report is not None:
            losses = self._stats.unreported()
            if losses is not None:
                self._report(losses)

    # -- control -------------------------------------------------------------------------------

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Send everything queued now; True if done within the timeout."""
        if self._closed:
            return True
        if self._thread is None or not self._thread.is_alive():
            if not self._queue:
                return True
            self._start()
        done = threading.Event()
        self._flush_waiters.append(done)
        self._wake.set()
        return done.wait(timeout_millis / 1000)

    def shutdown(self) -> None:
        """Flush what is queued, within ``shutdown_timeout``; later spans are dropped, counted."""
        if self._closed:
            return
        deadline = time.monotonic() + self._shutdown_timeout
        # Sends end a little before the deadline, so that the exporter thread can still
        # count (and log) how its last batch ended before the process goes.
        self._sender.cutoff = deadline - min(0.25, self._shutdown_timeout / 10)
        self._closed = True
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            self._wake.set()
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                self._sender.wakeup.set()  # cut a backoff wait short
        elif self._queue:
            self._drain()  # no thread (never started, or lost): flush from here
        if thread is None or not thread.is_alive():
            self._sender.close()  # (a thread still sending keeps its connection until exit)
        # Still queued, or still being sent by a thread stuck in a request that began
        # before the deadline was set: lost with the process, counted as failed.
        lost = len(self._queue)
        with self._flight_lock:
            lost, self._in_flight = lost + self._in_flight, 0
        if lost:
            self._stats.add("spans_failed", lost)
        self._stats.maybe_log()
