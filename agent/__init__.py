"""The tierscope agent: runs inside the monitored Python application.

It is a thin, standard OpenTelemetry set-up and imports nothing from the server
side (collector, store, ...), so the base ``pip install tierscope`` is all an
application needs. ``tests/test_packaging.py`` holds it to that.

Zero-code: ``tierscope-agent run -- gunicorn app:app``. From code::

    import tierscope.agent
    tierscope.agent.init()            # reads TIERSCOPE_* / OTEL_* settings

Unconfigured (no endpoint), ``init`` is a cheap no-op. See ``docs/agent.md``.
"""

from __future__ import annotations

from tierscope.agent.guard import on_swallowed
from tierscope.agent.jobs import job_context, run_job
from tierscope.agent.runtime import Agent, current, init, shutdown

__all__ = ("Agent", "current", "init", "job_context", "on_swallowed", "run_job", "shutdown")
