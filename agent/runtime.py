"""Starting and stopping the agent in a process.

:func:`init` builds a standard OpenTelemetry SDK set-up — a ``TracerProvider``
with the service's resource and the ``OTEL_TRACES_SAMPLER`` sampler — with the
agent's own export path (:mod:`.queue` → :mod:`.encode` → :mod:`.export`),
sets it as the global provider, arranges the instrumentations and the
``Server-Timing`` response header. Without an endpoint, or with
``OTEL_SDK_DISABLED=true``, it does nothing at all: no provider, no patching,
no thread.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass
from typing import Any

import wrapt
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from tierscope.agent import config as config_module
from tierscope.agent import guard, instrument
from tierscope.agent.config import AgentConfig
from tierscope.agent.encode import SpanEncoder
from tierscope.agent.export import OtlpHttpSender
from tierscope.agent.queue import ExportQueue
from tierscope.agent.scrub import Scrubber
from tierscope.agent.stats import AgentStats

logger = logging.getLogger("tierscope.agent")

REPORT_SPAN = "tierscope.agent.report"
_lock = threading.Lock()


@dataclass
class Agent:
    """The running agent of this process."""

    config: AgentConfig
    provider: TracerProvider
    queue: ExportQueue
    stats: AgentStats
    instrumented: list[str]

    def flush(self, timeout: float = 30.0) -> bool:
        return self.queue.force_flush(int(timeout * 1000))

    def shutdown(self) -> None:
        self.provider.shutdown()


_agent: Agent | None = None


def current() -> Agent | None:
    """The running agent, or None when it is not started (or unconfigured)."""
    return _agent


def _resource(config: AgentConfig) -> Resource:
    # Resource.create reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME too; ours win.
    import socket

    attributes: dict[str, Any] = {
        "service.name": config.service,
        "host.name": socket.gethostname(),
        "process.pid": os.getpid(),
        "telemetry.distro.name": "tierscope-agent",
    }
    return Resource.create(attributes)


def init(**settings: Any) -> Agent | None:
    """Start the agent in this process; returns it, or None when unconfigured or disabled.

    Keyword arguments override the environment; their names are those of
    :class:`~tierscope.agent.config.AgentConfig` (``endpoint``, ``ingest_key``,
    ``service``, ...). Calling it again returns the running agent unchanged.
    Never raises into the application: a failure is logged and the app runs
    uninstrumented.
    """
    global _agent
    with _lock:
        if _agent is not None:
            return _agent
        try:
            config = config_module.from_environment(**settings)
        except TypeError:
            raise  # a wrong keyword is a programming error the caller must see
        except Exception as error:
            guard.swallowed(error)
            return None
        if not config.enabled:
            return None
        try:
            _agent = _start(config)
        except Exception as error:
            logger.warning("tierscope agent: not started: %s", error)
            guard.swallowed(error)
            return None
        return _agent


def _start(config: AgentConfig) -> Agent:
    stats = AgentStats()
    guard.count_with(lambda: stats.add("errors_swallowed"))
    assert config.traces_url is not None
    sender = OtlpHttpSender(
        config.traces_url,
        ingest_key=config.ingest_key,
        headers=dict(config.headers),
        compression=config.compression,
        request_timeout=config.request_timeout,
    )
    scrubber = Scrubber(config.sensitive_params, config.mask, config.capture_headers)
    # The SDK's own atexit hook would flush too; ours bounds it with shutdown_timeout.
    provider = TracerProvider(resource=_resource(config), shutdown_on_exit=True)
    report_tracer = provider.get_tracer("tierscope.agent")

    def report(losses: dict[str, int]) -> None:
        # Loss counts reach the collector as a span of their own, once it answers again.
        with guard.guarded():
            report_tracer.start_span(
                REPORT_SPAN,
                context=otel_context.Context(),  # a root: it belongs to no request
                attributes={f"tierscope.agent.{name}": count for name, count in losses.items()},
            ).end()

    queue = ExportQueue(
        SpanEncoder(scrubber),
        sender,
        stats,
        max_queue_size=config.max_queue_size,
        max_batch_size=config.max_batch_size,
        schedule_delay=config.schedule_delay,
        export_deadline=config.export_deadline,
        shutdown_timeout=config.shutdown_timeout,
        report=report,
    )
    provider.add_span_processor(queue)
    trace.set_tracer_provider(provider)
    if config.capture_headers:
        # The contrib instrumentations capture what these name; the encoder drops any other header.
        names = ",".join(config.capture_headers)
        for variable in (
            "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST",
            "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE",
        ):
            os.environ.setdefault(variable, names)
    if os.environ.get("FASTAPI_OTEL_AUTO_CONFIGURE", "").lower() == "true":
        logger.warning("tierscope agent: FASTAPI_OTEL_AUTO_CONFIGURE=true ignored: the agent exports")
    # FastAPI would otherwise add an exporter of its own to this provider, sending
    # every span a second time, unscrubbed, wherever OTEL_EXPORTER_OTLP_* points.
    os.environ["FASTAPI_OTEL_AUTO_CONFIGURE"] = "false"
    if config.server_timing:
        from opentelemetry.instrumentation.propagators import set_global_response_propagator

        from tierscope.agent.servertiming import ServerTimingPropagator

        set_global_response_propagator(ServerTimingPropagator(config.timing_allow_origin))
    if config.rum_inject:
        from tierscope.agent import rum

        rum.install(config)
    _flush_on_sigterm(provider)
    _flush_after_uvicorn_shutdown(provider, config.shutdown_timeout)
    _flush_in_multiprocessing_children(provider, config.shutdown_timeout)
    instrumented = instrument.install(provider, config.disabled)
    logger.info("tierscope agent: exporting %s to %s", config.service, config.traces_url)
    return Agent(config, provider, queue, stats, instrumented)


def _flush_on_sigterm(provider: TracerProvider) -> None:
    """Flush when the process is terminated by an uncaught SIGTERM.

    A SIGTERM with the default disposition ends a process without running
    ``atexit``, and some servers re-raise it after their graceful shutdown
    (uvicorn does), so queued spans would be lost. Only when nothing else
    handles SIGTERM, the agent installs a handler that flushes (within
    ``shutdown_timeout``) and then re-raises SIGTERM with the default
    disposition: the process still ends by SIGTERM, as it would have. Servers
    that handle SIGTERM themselves (gunicorn) replace it, and exit through
    ``atexit``, which flushes too.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return

        def on_sigterm(signum: int, frame: Any) -> None:
            try:
                provider.shutdown()
            except Exception as error:
                guard.swallowed(error)
            finally:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)

        signal.signal(signal.SIGTERM, on_sigterm)
    except (ValueError, OSError) as error:  # not the main interpreter, or no signals here
        guard.swallowed(error)


def _flush_after_uvicorn_shutdown(provider: TracerProvider, timeout: float) -> None:
    """Flush when a uvicorn server has shut down gracefully.

    uvicorn re-raises the SIGTERM it caught once it has shut down, and its
    gunicorn worker class resets SIGTERM to the default first, so no Python code
    runs after; the flush has to happen at the end of ``Server.shutdown``.
    """

    def on_import(module: Any) -> None:
        async def after_shutdown(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            try:
                return await wrapped(*args, **kwargs)
            finally:
                with guard.guarded():
                    provider.force_flush(int(timeout * 1000))

        with guard.guarded():
            wrapt.wrap_function_wrapper(module, "Server.shutdown", after_shutdown)

    wrapt.register_post_import_hook(on_import, "uvicorn.server")


def _flush_in_multiprocessing_children(provider: TracerProvider, timeout: float) -> None:
    """Flush at the end of ``multiprocessing`` children started by fork.

    They end with ``os._exit``, which skips ``atexit``; multiprocessing runs its
    own finalizers first, so the agent registers one in each such child.
    """
    import multiprocessing.util

    def in_child(provider: TracerProvider) -> None:
        with guard.guarded():
            multiprocessing.util.Finalize(
                None, provider.force_flush, args=(int(timeout * 1000),), exitpriority=100
            )

    multiprocessing.util.register_after_fork(provider, in_child)


def shutdown() -> None:
    """Flush and stop the agent (also done at interpreter exit)."""
    global _agent
    agent, _agent = _agent, None
    if agent is not None:
        agent.shutdown()
