"""The contrib instrumentations, told not to compute what the agent drops.

The agent uses the OpenTelemetry instrumentation packages as they are, with
their own options, and changes only what costs the application CPU on every
request for nothing tierscope keeps (``bench/agent.py`` measures it):

- **No metrics.** The agent exports traces only; every instrumentation is given
  a no-op meter provider, so its request counters and duration histograms are
  no-op instruments rather than proxies waiting for a provider that never comes.
- **No SQL commenter context in Flask.** Flask's instrumentation attaches
  framework/route tags for sqlcommenter to the context of every request; the
  database instrumentations are run without sqlcommenter (their default), so
  nothing reads them.
- **No empty exclusion list in Flask.** With no excluded URLs configured, Flask's
  instrumentation still matches the request's full URL against an empty list
  three times per request, and building that URL (werkzeug's ``request.url``,
  IRI conversion included) is a large part of its per-request cost. The list
  is dropped only when it is empty: ``OTEL_PYTHON_FLASK_EXCLUDED_URLS`` and
  ``OTEL_PYTHON_EXCLUDED_URLS`` keep working.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.metrics import NoOpMeterProvider

_NO_METRICS = NoOpMeterProvider()


def options(name: str) -> dict[str, Any]:
    """Options for the instrumentor of integration ``name`` (besides the tracer provider)."""
    extra: dict[str, Any] = {"meter_provider": _NO_METRICS}
    if name == "flask":
        extra["enable_commenter"] = False
    return extra


def after_instrument(name: str) -> None:
    """Trim what an instrumentation set up that options cannot reach."""
    if name == "flask":
        _drop_empty_flask_exclusions()


def _drop_empty_flask_exclusions() -> None:
    from opentelemetry.instrumentation import flask as otel_flask

    instrumented = getattr(otel_flask, "_InstrumentedFlask", None)
    exclusions = getattr(instrumented, "_excluded_urls", None)
    # An ExcludeList is truthy even when empty; its list is what says "nothing excluded".
    if exclusions is not None and not getattr(exclusions, "_excluded_urls", True):
        instrumented._excluded_urls = None  # type: ignore[union-attr]
