"""The OpenAPI document at ``/api/v1/openapi.json``: FastAPI's, plus what it cannot see.

FastAPI derives paths, parameters and JSON bodies from the handlers. It cannot
know that the OTLP and RUM endpoints read raw bodies, which credential each
endpoint takes, or the error answers every authenticated endpoint may give;
this module adds those, so the document describes the whole contract and
schemathesis can drive every endpoint from it (tests/security/test_openapi.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

_ERROR = {
    "content": {
        "application/json": {
            "schema": {"type": "object", "properties": {"detail": {}}, "required": ["detail"]}
        }
    }
}
# OTLP answers errors with a google.rpc.Status in the request's encoding.
_STATUS = {
    "content": {
        "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
        "application/json": {"schema": {"type": "object", "description": "google.rpc.Status"}},
    }
}
_AUTH_ERRORS = {
    "401": "No key, a malformed key or an unknown key",
    "403": "A revoked or expired key, another kind of key, or too small a role",
    "503": "The store is unavailable; retry after Retry-After seconds",
}
_API_ERRORS = {
    "400": "A parameter or body that makes no sense",
    "404": "Not found, or another tenant's",
}
# The ingest endpoints' whole tables (docs/ingest.md, collector/rum.py).
_INGEST_ERRORS = {
    "400": "The body can never be accepted; the message names the field",
    "408": "The body did not arrive within TIERSCOPE_BODY_TIMEOUT; the connection is closed",
    "413": "The body is over the limit (after decompression)",
    "415": "An unsupported Content-Type or Content-Encoding",
    "429": "Too many beacons from this address or with this key; retry after Retry-After",
}
_RAW_BODIES = {
    ("/v1/traces", "post"): {
        "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
        "application/json": {"schema": {"type": "object", "description": "OTLP/JSON"}},
    },
    ("/v1/rum", "post"): {
        "text/plain": {"schema": {"type": "string", "description": "a beacon sent with sendBeacon"}},
        "application/json": {"schema": {"type": "object", "description": "a RUM beacon (docs/rum.md)"}},
    },
}
_SCHEMES = {
    "apiToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token (tsa_...). Reads need the viewer role, writes editor, "
        "/api/v1/keys, /retention, /purge and /tenant admin.",
    },
    "ingestKey": {"type": "http", "scheme": "bearer", "description": "An ingest key (tsi_...)"},
    "rumKey": {
        "type": "apiKey",
        "in": "query",
        "name": "key",
        "description": "A RUM key (tsr_...), in the URL: sendBeacon cannot set headers",
    },
}


def _credential(path: str) -> str | None:
    if path.startswith("/api/v1/"):
        return "apiToken"
    return {"/v1/traces": "ingestKey", "/v1/rum": "rumKey"}.get(path)


def describe(app: FastAPI) -> None:
    """Make ``app.openapi()`` return the completed document (built once, then cached)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        document.setdefault("components", {}).setdefault("securitySchemes", {}).update(_SCHEMES)
        for path, operations in document.get("paths", {}).items():
            for method, operation in operations.items():
                body = _RAW_BODIES.get((path, method))
                if body is not None:
                    operation["requestBody"] = {"required": True, "content": body}
                credential = _credential(path)
                if credential is None:
                    continue
                operation["security"] = [{credential: []}]
                responses = operation.setdefault("responses", {})
                if path.startswith("/api/v1/"):
                    errors, content = {**_AUTH_ERRORS, **_API_ERRORS}, _ERROR
                else:
                    errors = _AUTH_ERRORS if method == "options" else {**_AUTH_ERRORS, **_INGEST_ERRORS}
                    content = _STATUS if path == "/v1/traces" else _ERROR
                for status, description in errors.items():
                    responses.setdefault(status, {"description": description, **content})
        _fix_responses(document)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _fix_responses(document: dict[str, Any]) -> None:
    """Answers FastAPI describes differently from what the handlers send."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            invalid = operation.get("responses", {}).get("422")
            if invalid is not None:
                # Handlers also answer 422 themselves, with one message rather
                # than FastAPI's list of field errors (e.g. an alerting document
                # that is not a mapping).
                invalid["content"] = {
                    "application/json": {
                        "schema": {
                            "anyOf": [
                                {"$ref": "#/components/schemas/HTTPValidationError"},
                                _ERROR["content"]["application/json"]["schema"],
                            ]
                        }
                    }
                }
    metrics = document.get("paths", {}).get("/metrics", {}).get("get")
    if metrics is not None:
        metrics["responses"]["200"]["content"] = {
            "text/plain": {"schema": {"type": "string", "description": "Prometheus text exposition"}}
        }
