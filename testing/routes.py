"""Every HTTP endpoint of the collector app, read from its router.

Security tests iterate over this list rather than a hand-written one, so an
endpoint added tomorrow is covered by the role and tenant-isolation tests
without anyone remembering to add it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from starlette.routing import BaseRoute, Mount, Route

_PARAM = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?}")


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # with {name} placeholders, as routed
    in_schema: bool  # listed in the OpenAPI document
    module: str  # where its handler lives, for messages

    @property
    def params(self) -> list[str]:
        return _PARAM.findall(self.path)

    def url(self, values: dict[str, str]) -> str:
        return _PARAM.sub(lambda match: values[match.group(1)], self.path)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _walk(routes: list[BaseRoute] | list[Any], prefix: str) -> Iterator[Endpoint]:
    for route in routes:
        original = getattr(route, "original_router", None)
        if original is not None:
            # FastAPI 0.16x keeps an included router as one node with its include prefix.
            context = getattr(route, "include_context", None)
            yield from _walk(original.routes, prefix + (getattr(context, "prefix", "") or ""))
        elif isinstance(route, Mount):
            continue  # static files: no handler of ours behind it
        elif isinstance(route, Route):
            handler = route.endpoint
            for method in sorted(route.methods or ()):
                if method == "HEAD":
                    continue  # answered by the GET handler
                yield Endpoint(
                    method=method,
                    path=prefix + route.path,
                    in_schema=bool(getattr(route, "include_in_schema", True)),
                    module=f"{handler.__module__}.{handler.__name__}",
                )


def endpoints(app: Any) -> list[Endpoint]:
    """Every (method, path) the app routes, in routing order, without duplicates."""
    seen: dict[tuple[str, str], Endpoint] = {}
    for endpoint in _walk(app.router.routes, ""):
        seen.setdefault((endpoint.method, endpoint.path), endpoint)
    return list(seen.values())


def collector_app() -> Any:
    """A collector app built for inspection only (never started: no store is reached)."""
    from tierscope.collector.app import create_app
    from tierscope.config import load_settings

    return create_app(load_settings(), "postgresql://inspection-only@127.0.0.1:9/none")
