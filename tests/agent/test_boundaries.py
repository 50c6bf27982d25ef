"""Boundaries: ``pip install tierscope`` alone (no server extra) is a working agent;
unconfigured, the agent does nothing; errors in agent code never reach the app."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from packaging.requirements import Requirement

from tierscope.agent.encode import SpanEncoder
from tierscope.agent.export import OtlpHttpSender
from tierscope.agent.queue import ExportQueue
from tierscope.agent.stats import AgentStats
from tierscope.testing.apps import fetch_trace
from tierscope.testing.collector import CollectorProcess

ROOT = Path(__file__).parents[2]


def _base_closure() -> list[importlib.metadata.Distribution]:
    """The distributions ``pip install tierscope`` (no extras) brings, from the installed ones."""
    seen: dict[str, importlib.metadata.Distribution] = {}
    pending = [Requirement(r) for r in importlib.metadata.requires("tierscope") or []]
    pending = [r for r in pending if r.marker is None or r.marker.evaluate({"extra": ""})]
    while pending:
        requirement = pending.pop()
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        if name in seen:
            continue
        dist = importlib.metadata.distribution(requirement.name)
        seen[name] = dist
        for text in dist.requires or []:
            child = Requirement(text)
            if child.marker is None or child.marker.evaluate({"extra": ""}):
                pending.append(child)
    return list(seen.values())


def test_the_base_install_alone_is_a_working_agent(collector: CollectorProcess, tmp_path: Path) -> None:
    """Only the files of the base install's distributions (and the agent's own folder)
    are on the path of an isolated interpreter; it exports a span to the collector."""
    site = tmp_path / "site"
    dists = _base_closure()
    names = {dist.metadata["Name"].lower() for dist in dists}
    assert not names & {"fastapi", "psycopg", "uvicorn", "starlette", "pydantic", "numpy", "flask", "django"}
    for dist in dists:
        for file in dist.files or []:
            if str(file).startswith(".."):
                continue
            source = Path(str(dist.locate_file(file)))
            if source.is_file():
                (site / file).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, site / file)
    shutil.copytree(
        ROOT / "agent", site / "tierscope" / "agent", ignore=shutil.ignore_patterns("__pycache__")
    )
    script = textwrap.dedent(
        f"""
        import importlib.util, sys
        sys.path.insert(0, {str(site)!r})
        import tierscope.agent
        agent = tierscope.agent.init(
            endpoint={collector.url!r},
            ingest_key={collector.credentials()["ingest_key"]!r},
            service="base-install",
        )
        tracer = agent.provider.get_tracer("base")
        with tracer.start_as_current_span("GET /base") as span:
            print(format(span.get_span_context().trace_id, "032x"))
        tierscope.agent.shutdown()
        server = [m for m in sys.modules if m.split(".")[0] in ("fastapi", "psycopg", "uvicorn", "starlette",
                  "pydantic", "numpy") or m.startswith(("tierscope.collector", "tierscope.store"))]
        print(",".join(server))
        find = importlib.util.find_spec
        print(find("fastapi") is None, find("tierscope.collector") is None)
        """
    )
    # -S: no site-packages at all (nor their .pth files); -E: no PYTHON* variables.
    result = subprocess.run(
        [sys.executable, "-S", "-E", "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    trace_id, server_modules, absent = result.stdout.strip().splitlines()[-3:]
    assert server_modules == ""
    assert absent == "True True"
    (span,) = fetch_trace(collector, trace_id, spans=1)
    assert span["service"] == "base-install"


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=60
    )


def test_unconfigured_the_agent_does_nothing() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIERSCOPE_", "OTEL_"))}
    result = _python(
        """
        import threading, signal
        import requests
        before = requests.Session.send
        import tierscope.agent
        from opentelemetry import trace
        print(tierscope.agent.init(), type(trace.get_tracer_provider()).__name__,
              requests.Session.send is before, threading.active_count(),
              signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
        """,
        env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None", "ProxyTracerProvider", "True", "1", "True"]


def test_otel_sdk_disabled_wins_over_an_endpoint() -> None:
    env = {**os.environ, "TIERSCOPE_ENDPOINT": "http://127.0.0.1:9", "OTEL_SDK_DISABLED": "true"}
    result = _python("import tierscope.agent; print(tierscope.agent.init())", env)
    assert result.stdout.strip() == "None", result.stderr


def test_a_bad_setting_is_logged_and_defaulted_not_raised() -> None:
    env = {**os.environ, "TIERSCOPE_ENDPOINT": "http://127.0.0.1:9", "OTEL_BSP_MAX_QUEUE_SIZE": "many"}
    result = _python(
        "import tierscope.agent; a = tierscope.agent.init(); print(a.config.max_queue_size)",
        env,
    )
    assert result.stdout.strip() == "2048", result.stderr
    assert "Defaulting to 2048" in result.stderr


class _BrokenEncoder(SpanEncoder):
    def encode(self, spans):  # type: ignore[no-untyped-def]
        raise RuntimeError("encoder bug")


def test_an_error_in_the_export_path_never_reaches_the_app(swallowed_errors: list[BaseException]) -> None:
    stats = AgentStats()
    provider = TracerProvider(resource=Resource.create({}), shutdown_on_exit=False)
    queue = ExportQueue(
        _BrokenEncoder(), OtlpHttpSender("http://127.0.0.1:9/v1/traces"), stats, schedule_delay=0.01
    )
    provider.add_span_processor(queue)
    with provider.get_tracer("t").start_as_current_span("GET /fine"):
        pass  # the app's code: nothing raised here
    assert queue.force_flush(5000)
    provider.shutdown()
    assert [str(error) for error in swallowed_errors] == ["encoder bug"]
    assert stats.spans_failed == 1
    assert stats.errors_swallowed == 0  # counted by the running agent only; this queue is standalone
    swallowed_errors.clear()  # provoked on purpose
    Path(os.environ["TIERSCOPE_AGENT_ERRORS_FILE"]).unlink(missing_ok=True)


def test_a_wrong_keyword_to_init_is_a_programming_error() -> None:
    import tierscope.agent

    with pytest.raises(TypeError, match="unknown setting 'endpont'"):
        tierscope.agent.init(endpont="http://127.0.0.1:9")
