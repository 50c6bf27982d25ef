"""OTLP/HTTP encodings: request bodies in, responses and error statuses out.

Both encodings of the specification are accepted on one endpoint, chosen by
``Content-Type``: binary protobuf (``application/x-protobuf``) and JSON
(``application/json``). JSON is turned into the same protobuf message, so
everything after decoding has one code path. The response uses the request's
encoding, as the specification requires.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_PROTOBUF_TYPES = frozenset({PROTOBUF, "application/protobuf"})


class BadRequest(ValueError):
    """The body can never be accepted: answer 400 and do not retry."""

    def __init__(self, message: str, field: str = "body") -> None:
        super().__init__(message)
        self.field = field


def media_type(content_type: str | None) -> str | None:
    """``application/json; charset=utf-8`` -> ``application/json``; None if unsupported."""
    if not content_type:
        return None
    base = content_type.split(";", 1)[0].strip().lower()
    if base in _PROTOBUF_TYPES:
        return PROTOBUF
    if base == JSON:
        return JSON
    return None


def decode_traces(body: bytes, media: str) -> ExportTraceServiceRequest:
    """Parse an ``ExportTraceServiceRequest`` in either encoding.

    Raises:
        BadRequest: the body is not a valid request in that encoding.
    """
    if media == PROTOBUF:
        try:
            return ExportTraceServiceRequest.FromString(body)
        except (DecodeError, RuntimeError) as exc:
            raise BadRequest(f"body is not a valid OTLP protobuf ExportTraceServiceRequest: {exc}") from None
    return _decode_json(body)


def _decode_json(body: bytes) -> ExportTraceServiceRequest:
    try:
        data = json.loads(body)
    except RecursionError:
        raise BadRequest("body is not valid OTLP/JSON: nested too deeply") from None
    except ValueError as exc:  # also UnicodeDecodeError, and integers too long to read
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object with a resourceSpans array")
    _hex_ids_to_base64(data)
    try:
        return json_format.ParseDict(data, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except RecursionError:
        raise BadRequest("body is not valid OTLP/JSON: nested too deeply") from None
    except (json_format.ParseError, TypeError, ValueError) as exc:
        raise BadRequest(f"body is not a valid OTLP/JSON ExportTraceServiceRequest: {exc}") from None


def _hex_ids_to_base64(data: dict[str, Any]) -> None:
    """OTLP/JSON writes ids as hex, not as protobuf-JSON's base64: convert in place.

    An id that is not hex becomes empty, so the span is rejected on its own
    (partial success) instead of failing the whole request.
    """
    for resource_spans in _list(data, "resourceSpans", "resource_spans"):
        for scope_spans in _list(resource_spans, "scopeSpans", "scope_spans"):
            for span in _list(scope_spans, "spans"):
                _convert_ids(
                    span, ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id")
                )
                for link in _list(span, "links"):
                    _convert_ids(link, ("traceId", "trace_id", "spanId", "span_id"))


def _list(container: Any, *keys: str) -> list[Any]:
    if not isinstance(container, dict):
        return []
    for key in keys:
        value = container.get(key)
        if isinstance(value, list):
            return value
    return []


def _convert_ids(obj: Any, keys: tuple[str, ...]) -> None:
    if not isinstance(obj, dict):
        return
    for key in keys:
        value = obj.get(key)
        if isinstance(value, str):
            try:
                raw = binascii.unhexlify(value)
            except (binascii.Error, ValueError):
                raw = b""
            obj[key] = base64.b64encode(raw).decode()


# -- responses ------------------------------------------------------------------


def success(media: str, rejected: int = 0, message: str = "") -> bytes:
    """An ``ExportTraceServiceResponse``; partial success when spans were rejected
    (or, with ``rejected == 0``, a warning message)."""
    response = ExportTraceServiceResponse()
    if rejected or message:
        response.partial_success.CopyFrom(
            ExportTracePartialSuccess(rejected_spans=rejected, error_message=message)
        )
    if media == JSON:
        return json_format.MessageToJson(response, indent=None).encode()
    return response.SerializeToString()


_CODES = {
    400: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    403: code_pb2.PERMISSION_DENIED,
    404: code_pb2.NOT_FOUND,
    405: code_pb2.UNIMPLEMENTED,
    413: code_pb2.RESOURCE_EXHAUSTED,
    415: code_pb2.INVALID_ARGUMENT,
    429: code_pb2.RESOURCE_EXHAUSTED,
    503: code_pb2.UNAVAILABLE,
}


def status(http_status: int, message: str, media: str, field: str | None = None) -> bytes:
    """A ``google.rpc.Status`` body for an error response, in the request's encoding."""
    body = status_pb2.Status(code=_CODES.get(http_status, code_pb2.UNKNOWN), message=message)
    if field is not None:
        detail = error_details_pb2.BadRequest(
            field_violations=[error_details_pb2.BadRequest.FieldViolation(field=field, description=message)]
        )
        body.details.add().Pack(detail)
    if media == JSON:
        return json_format.MessageToJson(body, indent=None).encode()
    return body.SerializeToString()


# -- values ---------------------------------------------------------------------


def any_value(value: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as a JSON-ready Python value (bytes as base64)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if kind == "double_value" and not math.isfinite(value.double_value):
        return str(value.double_value)  # NaN and infinities have no JSON form: "nan", "inf"
    return getattr(value, kind)


def attributes(pairs: Any) -> dict[str, Any]:
    """Repeated ``KeyValue`` as a dict (the first of repeated keys wins, as everywhere
    in tierscope)."""
    found: dict[str, Any] = {}
    for pair in pairs:
        if pair.key not in found:
            found[pair.key] = any_value(pair.value)
    return found


__all__ = [
    "JSON",
    "PROTOBUF",
    "AnyValue",
    "BadRequest",
    "KeyValue",
    "any_value",
    "attributes",
    "decode_traces",
    "media_type",
    "status",
    "success",
]
