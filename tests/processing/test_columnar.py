"""The columnar window gives exactly the figures of the plain, trace-by-trace
reference (assemble.summarize + Rollup.add), on random traces."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tierscope.processing.assemble import entry_span, summarize
from tierscope.processing.columnar import TraceOutcome, Window, rollup
from tierscope.processing.rollup import Rollup
from tierscope.store.processing import SpanRow

KINDS = (1, 2, 3, 4, 5)
TIERS = ("app", "db", "external", "cache", "queue", "web", "platform")


def random_trace(rnd: random.Random, tenant: int, number: int) -> list[SpanRow]:
    trace_id = number.to_bytes(16, "big")
    base = rnd.randint(0, 5) * 60_000_000 + rnd.randint(0, 59_000_000)
    spans: list[SpanRow] = []
    for index in range(rnd.randint(1, 12)):
        parent = rnd.choice([None, *(s.span_id for s in spans)]) if spans else None
        if parent is not None and rnd.random() < 0.1:
            parent = b"missing!"  # a parent that never arrived
        start = base + rnd.randint(0, 900_000)
        spans.append(
            SpanRow(
                tenant,
                trace_id,
                (number * 100 + index + 1).to_bytes(8, "big"),  # never zero: ingest rejects it
                parent,
                start,
                rnd.randint(0, 600_000),
                rnd.choice(["crm-web", "erp-api", "ext"]),
                f"op{index % 3}",
                rnd.choice(KINDS),
                rnd.choice(TIERS),
                rnd.choice([None, "SELECT ?", "UPDATE t SET a = ?", "host:80"]),
                rnd.choice([None, "db1", "ext:443"]),
                rnd.choice([0, 0, 0, 2]),
                7,
                0,
                None,
            )
        )
    return spans


def component_of(span: SpanRow) -> str | None:
    return span.component


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=10**9))
def test_columnar_figures_equal_the_reference(seed: int) -> None:
    rnd = random.Random(seed)
    traces = [random_trace(rnd, rnd.choice([1, 2]), number) for number in range(rnd.randint(1, 40))]
    window = Window.of(traces, component_of)
    reference = Rollup()
    outcomes = []
    for index, spans in enumerate(traces):
        summary = summarize(spans, component_of)
        # The same per-trace facts as the processor's: entry, self time per tier.
        assert window.span(int(window.entry[index])) == entry_span(spans)
        assert window.tier_us[index].tolist() == summary.tier_us
        counted = rnd.random() < 0.8
        bt = rnd.choice(["A", "B"])
        apdex = rnd.choice([100.0, 500.0])
        outcomes.append(TraceOutcome(bt, apdex, summary.error, counted))
        if counted:
            reference.add(summary, bt, apdex)
    result = rollup(window, outcomes)
    assert result.bts == reference.bts
    assert result.components == reference.components
    assert result.edges == reference.edges
