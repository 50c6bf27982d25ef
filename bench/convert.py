"""Convert benchmark: the ingest worker's CPU per span, from request bytes to COPY rows.

    .venv/bin/python bench/convert.py          # --rounds 15 --requests 32

Times, in-process and on the ingest benchmark's batches (512 spans, about ten
attributes each, every span unique; ``tierscope.testing.batches``):

- **decode**: ``ExportTraceServiceRequest.FromString`` of the request body
  alone (protobuf's C decoder): the baseline, the least any worker must spend;
- **convert**: decoding plus :func:`tierscope.collector.convert.convert`
  (validation, limits, classification, the rows' COPY encoding), with the
  worker's classifiers warm as in a running worker;
- **convert, classification off**: the same with every span given the same
  tier, to show what classification costs.

Rounds alternate between the three so the host's drift weighs on each alike;
each figure is the best of the rounds' per-span times (the host's noise only
ever adds time, as ``timeit`` reasons), and the ratios of convert to decode are
what to compare across machines. The last line printed
is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from rich.console import Console
from rich.table import Table

from tierscope.collector import convert as conversion
from tierscope.collector import tiers
from tierscope.collector.span_bytes import span_bytes
from tierscope.testing.batches import BatchTemplate


class _OneTier:
    """A classifier that reads nothing: every span is app time."""

    def __call__(self, span: object, encoded: bytes) -> tiers.Classification:
        return tiers.Classification("app")


def _per_span(bodies: list[bytes], requests: int, work: Callable[[bytes], object]) -> float:
    started = time.perf_counter()
    for number in range(requests):
        work(bodies[number % len(bodies)])
    return (time.perf_counter() - started) / (requests * 512) * 1e6


def measure(rounds: int = 15, requests: int = 32) -> dict[str, float]:
    """The best per-span time (µs) of decode, convert and convert_one_tier over
    ``rounds`` alternating rounds of ``requests`` 512-span requests each."""
    template = BatchTemplate.build()
    bodies = [template.next_body()[1] for _ in range(16)]
    limits = conversion.Limits()
    warm = tiers.classifier

    def decode(body: bytes) -> object:
        return ExportTraceServiceRequest.FromString(body)

    def convert(body: bytes) -> object:
        return conversion.convert(decode(body), 1, limits, time.time_ns(), span_bytes(body))

    def convert_one_tier(body: bytes) -> object:
        tiers.classifier = lambda **_: _OneTier()  # type: ignore[assignment,misc]
        try:
            return convert(body)
        finally:
            tiers.classifier = warm

    for body in bodies:  # a running worker's classifiers have seen these calls
        convert(body)
    kinds = {"decode": decode, "convert": convert, "convert_one_tier": convert_one_tier}
    times: dict[str, list[float]] = {name: [] for name in kinds}
    for _ in range(rounds):
        for name, work in kinds.items():
            times[name].append(_per_span(bodies, requests, work))
    return {name: min(values) for name, values in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="alternating rounds")
    parser.add_argument("--requests", type=int, default=32, help="512-span requests per round and kind")
    args = parser.parse_args()

    best = measure(args.rounds, args.requests)
    figures = {
        "decode_us_per_span": round(best["decode"], 2),
        "convert_us_per_span": round(best["convert"], 2),
        "convert_one_tier_us_per_span": round(best["convert_one_tier"], 2),
        "convert_to_decode": round(best["convert"] / best["decode"], 2),
        "classification_share": round(1 - best["convert_one_tier"] / best["convert"], 3),
        "rounds": args.rounds,
    }
    table = Table(title="tierscope convert benchmark (µs per span, best of rounds)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in figures.items():
        table.add_row(name, str(value))
    Console().print(table)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
