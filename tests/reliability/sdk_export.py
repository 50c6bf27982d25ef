"""Export one batch with whatever OpenTelemetry SDK this interpreter has, and say
what the exporter did, as JSON on stdout.

Run by tests/reliability/test_t08_sdk_retry.py in a second virtualenv holding an
older SDK (it cannot share the project's .venv, whose agent pins a newer one), so
it imports nothing of tierscope:

    python sdk_export.py '{"endpoint": ..., "key": ..., "batches": [[100, "a"], [10, "b"]], "timeout": 20}'

Each batch (spans, name) is exported in turn by one exporter, right after the
other (a first batch can put the tenant over its rate for the second without a
process start in between). Attempts are seen through the exporter's own ``requests.Session`` (a response
hook); the exporter itself is untouched.
"""

from __future__ import annotations

import json
import sys
import time
from importlib import metadata

import requests
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def spans(count: int, name: str) -> list:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "t08-app"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t08")
    for _ in range(count):
        with tracer.start_as_current_span(name):
            pass
    provider.shutdown()
    return list(memory.get_finished_spans())


def main() -> None:
    asked = json.loads(sys.argv[1])
    batches = [(name, spans(count, name)) for count, name in asked["batches"]]
    attempts: list[dict[str, object]] = []
    began = time.monotonic()

    def seen(response: requests.Response, *args: object, **kwargs: object) -> None:
        attempts.append(
            {
                "status": response.status_code,
                "retry_after": response.headers.get("retry-after"),
                "at_s": round(time.monotonic() - began, 3),
            }
        )

    session = requests.Session()
    session.hooks["response"].append(seen)
    exporter = OTLPSpanExporter(
        endpoint=asked["endpoint"],
        headers={"Authorization": f"Bearer {asked['key']}"},
        timeout=asked["timeout"],
        session=session,
    )
    results = []
    for name, batch in batches:
        attempts.clear()
        began = time.monotonic()
        result = exporter.export(batch)
        results.append(
            {
                "name": name,
                "result": "success" if result == SpanExportResult.SUCCESS else "failure",
                "attempts": list(attempts),
                "export_s": round(time.monotonic() - began, 3),
            }
        )
    exporter.shutdown()
    print(
        json.dumps(
            {
                "sdk": metadata.version("opentelemetry-sdk"),
                "exporter": metadata.version("opentelemetry-exporter-otlp-proto-http"),
                "batches": results,
            }
        )
    )


if __name__ == "__main__":
    main()
