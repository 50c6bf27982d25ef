"""The contrib instrumentations run with the agent's cost-cutting options
(``tierscope.agent.lean``) and still record what tierscope relies on; what
users configure (excluded URLs) still works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import json
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    import tierscope.agent

    agent = tierscope.agent.init(endpoint="http://127.0.0.1:9", service="lean-check")
    memory = InMemorySpanExporter()
    agent.provider.add_span_processor(SimpleSpanProcessor(memory))

    import flask
    from opentelemetry.instrumentation import flask as otel_flask

    app = flask.Flask("lean")

    @app.get("/invoices/<int:number>")
    def invoice(number):
        return {"number": number}

    @app.get("/healthz")
    def health():
        return "ok"

    client = app.test_client()
    timing = client.get("/invoices/7?page=2").headers.get("Server-Timing")
    client.get("/healthz")
    spans = [
        {"name": s.name, "kind": s.kind.name, "attributes": dict(s.attributes)}
        for s in memory.get_finished_spans()
    ]
    print(json.dumps({
        "spans": spans,
        "server_timing": timing,
        "exclusions_kept": otel_flask._InstrumentedFlask._excluded_urls is not None,
    }))
    """
)


def run(extra: dict[str, str] | None = None) -> dict:
    # The agent's own variables and OTEL_* of this shell do not leak in; the errors file does.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TIERSCOPE_"))}
    env["TIERSCOPE_AGENT_ERRORS_FILE"] = os.environ["TIERSCOPE_AGENT_ERRORS_FILE"]
    env.update(extra or {})
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_flask_server_span_keeps_what_tierscope_uses() -> None:
    result = run()
    assert not result["exclusions_kept"], "an empty exclusion list costs a URL build per request"
    spans = {span["attributes"].get("http.target"): span for span in result["spans"]}
    invoice = spans["/invoices/7?page=2"]
    assert invoice["name"] == "GET /invoices/<int:number>"
    assert invoice["kind"] == "SERVER"
    attributes = invoice["attributes"]
    assert attributes["http.route"] == "/invoices/<int:number>"
    assert attributes["http.method"] == "GET"
    assert attributes["http.status_code"] == 200
    assert "/healthz" in spans, "nothing is excluded unless configured"
    assert result["server_timing"].startswith('traceparent;desc="00-')


def test_configured_exclusions_still_apply() -> None:
    result = run({"OTEL_PYTHON_FLASK_EXCLUDED_URLS": "healthz"})
    assert result["exclusions_kept"]
    targets = [span["attributes"].get("http.target") for span in result["spans"]]
    assert targets == ["/invoices/7?page=2"]
