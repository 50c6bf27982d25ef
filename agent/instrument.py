"""Which libraries are instrumented, and when.

Each library is instrumented by its OpenTelemetry contrib instrumentation, at
the moment the application imports it (a post-import hook), not before: an app
that never imports Django pays nothing for Django's instrumentation, and
instrumenting at import time patches classes before the app binds them
(``from flask import Flask``). A library already imported when the agent
starts is instrumented at once.

Django is special: its instrumentation edits ``settings.MIDDLEWARE`` and would
configure empty settings if called before ``DJANGO_SETTINGS_MODULE`` is read,
so it runs when Django builds its middleware chain, settings loaded.

FastAPI (recent versions) has OpenTelemetry tracing of its own, on as soon as
a tracer provider is set. It stands down when it finds the contrib ASGI
middleware in the app's middleware stack, which the FastAPI instrumentation
puts there, so a request gets one server span, not two
(``tests/agent/test_fastapi.py`` checks it).
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import wrapt

from tierscope.agent import lean
from tierscope.agent.guard import swallowed

logger = logging.getLogger("tierscope.agent")


@dataclass(frozen=True)
class Integration:
    """One library: the module whose import triggers it, and its instrumentor."""

    name: str  # as in OTEL_PYTHON_DISABLED_INSTRUMENTATIONS
    trigger: str  # module whose import triggers instrumentation
    instrumentor: str  # "module:Class"
    options: dict[str, Any] = field(default_factory=dict)


INTEGRATIONS = (
    Integration("threading", "threading", "opentelemetry.instrumentation.threading:ThreadingInstrumentor"),
    Integration("fastapi", "fastapi", "opentelemetry.instrumentation.fastapi:FastAPIInstrumentor"),
    Integration("starlette", "starlette", "opentelemetry.instrumentation.starlette:StarletteInstrumentor"),
    Integration("flask", "flask", "opentelemetry.instrumentation.flask:FlaskInstrumentor"),
    Integration(
        "django", "django.core.handlers.base", "opentelemetry.instrumentation.django:DjangoInstrumentor"
    ),
    Integration("psycopg", "psycopg", "opentelemetry.instrumentation.psycopg:PsycopgInstrumentor"),
    # The check would refuse psycopg2 built from source (the dist is psycopg2, not -binary).
    Integration(
        "psycopg2",
        "psycopg2",
        "opentelemetry.instrumentation.psycopg2:Psycopg2Instrumentor",
        {"skip_dep_check": True},
    ),
    # The instrumentation (0.66) declares sqlalchemy < 2.1 and would refuse 2.1 silently
    # (one log line, no span); the engine events it hooks are unchanged in 2.1, and
    # tests/agent/test_clients.py checks its span arrives with the SQLAlchemy installed.
    Integration(
        "sqlalchemy",
        "sqlalchemy",
        "opentelemetry.instrumentation.sqlalchemy:SQLAlchemyInstrumentor",
        {"skip_dep_check": True},
    ),
    Integration("sqlite3", "sqlite3", "opentelemetry.instrumentation.sqlite3:SQLite3Instrumentor"),
    Integration("requests", "requests", "opentelemetry.instrumentation.requests:RequestsInstrumentor"),
    Integration("httpx", "httpx", "opentelemetry.instrumentation.httpx:HTTPXClientInstrumentor"),
    Integration("urllib3", "urllib3", "opentelemetry.instrumentation.urllib3:URLLib3Instrumentor"),
)

_lock = threading.Lock()
_done: dict[str, bool] = {}


def _instrumentor(integration: Integration) -> Any:
    module_name, _, class_name = integration.instrumentor.partition(":")
    return getattr(importlib.import_module(module_name), class_name)()


def _instrument(integration: Integration, tracer_provider: Any) -> None:
    with _lock:
        if _done.get(integration.name):
            return
        _done[integration.name] = True
    try:
        instrumentor = _instrumentor(integration)
        if not instrumentor.is_instrumented_by_opentelemetry:
            options = {**lean.options(integration.name), **integration.options}
            instrumentor.instrument(tracer_provider=tracer_provider, **options)
            if not instrumentor.is_instrumented_by_opentelemetry:
                # It refused (a library version outside its declared range): say so plainly.
                logger.warning("tierscope agent: %s is not instrumented (see above)", integration.name)
                return
            lean.after_instrument(integration.name)
            logger.debug("tierscope agent: instrumented %s", integration.name)
    except Exception as error:
        logger.warning("tierscope agent: could not instrument %s: %s", integration.name, error)
        swallowed(error)


def _defer_django(integration: Integration, tracer_provider: Any) -> Callable[[Any], None]:
    def on_import(module: Any) -> None:
        def load_middleware(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            _instrument(integration, tracer_provider)  # settings are loaded by now
            return wrapped(*args, **kwargs)

        try:
            wrapt.wrap_function_wrapper(module, "BaseHandler.load_middleware", load_middleware)
        except Exception as error:
            swallowed(error)

    return on_import


def install(tracer_provider: Any, disabled: Collection[str] = ()) -> list[str]:
    """Arrange for every integration not disabled; returns their names."""
    arranged = []
    for integration in INTEGRATIONS:
        if integration.name in disabled:
            continue
        if integration.name == "django":
            hook = _defer_django(integration, tracer_provider)
        else:

            def hook(module: Any, integration: Integration = integration) -> None:
                _instrument(integration, tracer_provider)

        wrapt.register_post_import_hook(hook, integration.trigger)
        arranged.append(integration.name)
    return arranged


def uninstall() -> None:
    """Undo what was instrumented (tests)."""
    with _lock:
        names = [name for name, done in _done.items() if done]
        _done.clear()
    for integration in INTEGRATIONS:
        if integration.name in names:
            try:
                instrumentor = _instrumentor(integration)
                if instrumentor.is_instrumented_by_opentelemetry:
                    instrumentor.uninstrument()
            except Exception as error:
                swallowed(error)
