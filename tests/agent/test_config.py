"""Settings: TIERSCOPE_* over OTEL_* over defaults; init() arguments over all."""

from __future__ import annotations

from typing import Any

import pytest

from tierscope.agent.config import DEFAULT_SENSITIVE_PARAMS, from_environment

CASES: dict[str, tuple[dict[str, str], dict[str, Any], dict[str, Any]]] = {
    "nothing set: a no-op agent": ({}, {}, {"enabled": False, "traces_url": None}),
    "the tierscope endpoint gets /v1/traces": (
        {"TIERSCOPE_ENDPOINT": "http://c:4318/"},
        {},
        {"enabled": True, "traces_url": "http://c:4318/v1/traces"},
    ),
    "the OTLP base endpoint is honoured": (
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://o:4318"},
        {},
        {"traces_url": "http://o:4318/v1/traces"},
    ),
    "the OTLP traces endpoint is used as given": (
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://o:4318/custom/v1/traces"},
        {},
        {"traces_url": "http://o:4318/custom/v1/traces"},
    ),
    "TIERSCOPE_ENDPOINT wins over OTLP's": (
        {"TIERSCOPE_ENDPOINT": "http://t:1", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://o:2"},
        {},
        {"traces_url": "http://t:1/v1/traces"},
    ),
    "a bearer key in OTLP headers is the ingest key, other headers are kept": (
        {"OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20tsi_abc,X-Env=prod"},
        {},
        {"ingest_key": "tsi_abc", "headers": {"X-Env": "prod"}},
    ),
    "TIERSCOPE_SERVICE wins over OTEL_SERVICE_NAME and resource attributes": (
        {"TIERSCOPE_SERVICE": "crm", "OTEL_SERVICE_NAME": "x", "OTEL_RESOURCE_ATTRIBUTES": "service.name=y"},
        {},
        {"service": "crm"},
    ),
    "service.name from resource attributes when nothing else names it": (
        {"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,service.name=erp"},
        {},
        {"service": "erp"},
    ),
    "OTEL milliseconds become seconds": (
        {
            "OTEL_BSP_SCHEDULE_DELAY": "250",
            "OTEL_BSP_EXPORT_TIMEOUT": "4000",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "500",
        },
        {},
        {"schedule_delay": 0.25, "export_deadline": 4.0, "request_timeout": 0.5},
    ),
    "bad numbers fall back to the default": ({"OTEL_BSP_MAX_QUEUE_SIZE": "-3"}, {}, {"max_queue_size": 2048}),
    "sensitive parameters are added to the defaults": (
        {"TIERSCOPE_SENSITIVE_PARAMS": "tenant_pin, otp"},
        {},
        {"sensitive_params": (*DEFAULT_SENSITIVE_PARAMS, "tenant_pin", "otp")},
    ),
    "masking can be turned off": ({"TIERSCOPE_MASK": "none"}, {}, {"mask": frozenset()}),
    "OTEL_SDK_DISABLED wins over an endpoint": (
        {"TIERSCOPE_ENDPOINT": "http://t:1", "OTEL_SDK_DISABLED": "true"},
        {},
        {"enabled": False},
    ),
    "init() arguments win over the environment": (
        {"TIERSCOPE_SERVICE": "from-env", "TIERSCOPE_ENDPOINT": "http://t:1"},
        {"service": "from-code", "max_queue_size": 10},
        {"service": "from-code", "max_queue_size": 10},
    ),
}


@pytest.mark.parametrize(("env", "arguments", "expected"), CASES.values(), ids=CASES.keys())
def test_settings(env: dict[str, str], arguments: dict[str, Any], expected: dict[str, Any]) -> None:
    config = from_environment(env, **arguments)
    for name, value in expected.items():
        assert getattr(config, name) == value, name
