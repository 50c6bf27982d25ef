"""A window of traces processed as columns (numpy), not span by span.

Trace processing has to keep up with ingest on the same few cores, and a
Python loop over every span of every trace costs more than ingest itself. So
the per-span work — self time with concurrent children, time per tier, the
entry of each trace, components and service-map edges, histogram buckets — is
done on arrays for the whole window at once; only what truly is per trace
(naming, the outcome) stays in Python.

:mod:`.assemble` and :class:`.rollup.Rollup` are the reference: the same
figures computed plainly, one trace at a time. tests/processing/test_columnar.py
holds the two equal on random traces.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tierscope.collector.tiers import TIERS
from tierscope.processing import histogram
from tierscope.processing.rollup import MINUTE_US, BtFigures, ComponentFigures, EdgeFigures, Rollup
from tierscope.store.processing import SpanRow

TIER_CODES = {tier: index for index, tier in enumerate(TIERS)}
_APP = TIER_CODES["app"]
_EDGE_KINDS = ("service", "db", "cache", "queue", "external")
_EDGE_KIND_OF_TIER = np.array(
    [
        _EDGE_KINDS.index(tier) if tier in ("db", "cache", "queue") else _EDGE_KINDS.index("external")
        for tier in TIERS
    ],
    dtype=np.int64,
)
_DB_TIERS = np.array([tier in ("db", "cache") for tier in TIERS])
SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5

I64 = npt.NDArray[np.int64]


def buckets(micros: npt.NDArray[np.float64]) -> I64:
    """:func:`histogram.bucket` for an array."""
    clipped = np.maximum(micros, 1.0)
    index = np.ceil(np.log(clipped) / math.log(histogram.GAMMA)).astype(np.int64)
    index[micros <= 1] = 0
    return np.minimum(index, histogram.MAX_BUCKET)


class _Strings:
    """Text values as small integer codes, for grouping with numpy."""

    def __init__(self) -> None:
        self.codes: dict[str | None, int] = {None: 0, "": 0}
        self.values: list[str | None] = [None]

    def code(self, value: str | None) -> int:
        code = self.codes.get(value)
        if code is None:
            code = self.codes[value] = len(self.values)
            self.values.append(value)
        return code


@dataclass
class Window:
    """Every ready trace of a window, as columns over all their spans."""

    traces: list[list[SpanRow]]
    trace_of: I64  # per span: which trace
    start: I64
    duration: I64
    failed: I64  # per span: 1 if its status is error
    self_us: I64
    tier_us: I64  # per trace and tier: self time
    entry: I64  # per trace: the entry span (an index into spans)
    spans: list[SpanRow]
    strings: _Strings
    component_code: I64  # per span; 0 for none
    tier_code: I64
    edge_source: I64  # per edge (service code), edges only for spans that make one
    edge_target: I64
    edge_kind: I64
    edge_span: I64  # which span each edge is

    @classmethod
    def of(cls, traces: list[list[SpanRow]], component_of: Callable[[SpanRow], str | None]) -> Window:
        spans = [span for trace in traces for span in trace]
        count = len(spans)
        trace_of = np.repeat(np.arange(len(traces), dtype=np.int64), [len(t) for t in traces])
        # One transpose (in C) instead of a Python pass per column.
        (
            tenants,
            _,
            span_ids,
            parent_ids,
            starts,
            durations,
            services,
            names,
            kinds,
            tiers,
            components,
            peers,
            statuses,
            resources,
            _,
            _,
        ) = zip(*spans, strict=True) if spans else ((),) * 16
        start = np.array(starts, dtype=np.int64)
        duration = np.array(durations, dtype=np.int64)
        kind = np.array(kinds, dtype=np.int64)
        failed_ = (np.array(statuses, dtype=np.int64) == 2).astype(np.int64)
        tier_code = np.array([TIER_CODES.get(t, _APP) for t in tiers], dtype=np.int64)

        # Each span's parent, within its own trace.
        owners = trace_of.tolist()
        position = {key: index for index, key in enumerate(zip(owners, span_ids, strict=True))}
        parent = np.array(
            [position.get(key, -1) for key in zip(owners, parent_ids, strict=True)], dtype=np.int64
        )
        self_us = _self_times(start, duration, parent)
        tier_us = (
            np.bincount(
                trace_of * len(TIERS) + tier_code, weights=self_us, minlength=len(traces) * len(TIERS)
            )
            .astype(np.int64)
            .reshape(len(traces), len(TIERS))
        )

        # The entry: the first server span, else the first consumer, else the first root.
        is_root = np.array([not p for p in parent_ids], dtype=bool)
        rank = np.where(kind == SERVER, 0, np.where(kind == CONSUMER, 1, np.where(is_root, 2, 3)))
        id_numbers = np.frombuffer(b"".join(span_ids), dtype=">u8").astype(np.uint64)
        order = np.lexsort((id_numbers, start, rank, trace_of))
        _, first = np.unique(trace_of[order], return_index=True)
        entry = order[first]

        strings = _Strings()
        code = strings.code
        # A component depends on these fields only, and a window repeats few
        # combinations: decide each once (the keys are built by zip, in C).
        keys = list(zip(tiers, kinds, components, names, peers, tenants, resources, services, strict=True))
        some_span = dict(zip(keys, spans, strict=True))
        component_of_key = {key: code(component_of(span)) for key, span in some_span.items()}
        component_code = np.fromiter(map(component_of_key.__getitem__, keys), np.int64, count)
        service_code = np.fromiter(map(code, services), np.int64, count)
        peer_code = np.fromiter(map(code, peers), np.int64, count)

        # Service-map edges: a call answered by another traced service points at
        # that service; any other call, or a database span, at its peer.
        answering = np.nonzero(((kind == SERVER) | (kind == CONSUMER)) & (parent >= 0))[0]
        callee = np.full(count, -1, dtype=np.int64)
        callee[parent[answering]] = answering  # the last one wins, as in assemble
        makes_edge = np.nonzero((kind == CLIENT) | (kind == PRODUCER) | _DB_TIERS[tier_code])[0]
        called = callee[makes_edge]
        via_service = (called >= 0) & (service_code[np.maximum(called, 0)] != service_code[makes_edge])
        target = np.where(via_service, service_code[np.maximum(called, 0)], peer_code[makes_edge])
        edge_kind = np.where(via_service, 0, _EDGE_KIND_OF_TIER[tier_code[makes_edge]])
        keep = target != 0
        return cls(
            traces=traces,
            trace_of=trace_of,
            start=start,
            duration=duration,
            failed=failed_,
            self_us=self_us,
            tier_us=tier_us,
            entry=entry,
            spans=spans,
            strings=strings,
            component_code=component_code,
            tier_code=tier_code,
            edge_source=service_code[makes_edge][keep],
            edge_target=target[keep],
            edge_kind=edge_kind[keep],
            edge_span=makes_edge[keep],
        )


def _unique_rows(rows: I64) -> tuple[I64, I64]:
    """``np.unique(rows, axis=0, return_inverse=True)``, by one lexsort: numpy's
    row-unique views rows as opaque records and was most of a rollup's time."""
    order = np.lexsort(rows.T[::-1])
    ordered = rows[order]
    starts = np.concatenate(([True], (ordered[1:] != ordered[:-1]).any(axis=1)))
    inverse = np.empty(len(rows), dtype=np.int64)
    inverse[order] = np.cumsum(starts) - 1
    return ordered[starts], inverse


def _self_times(start: I64, duration: I64, parent: I64) -> I64:
    """Each span's duration minus the union of its children's intervals (clipped
    to it), never negative — for every span at once."""
    children = np.nonzero(parent >= 0)[0]
    if len(children) == 0:
        return duration.copy()
    owner = parent[children]
    child_start = np.maximum(start[children], start[owner])
    child_end = np.minimum(start[children] + duration[children], start[owner] + duration[owner])
    valid = child_end > child_start
    owner, child_start, child_end = owner[valid], child_start[valid], child_end[valid]
    if len(owner) == 0:
        return duration.copy()
    order = np.lexsort((child_start, owner))
    owner, child_start, child_end = owner[order], child_start[order], child_end[order]
    base = int(child_start.min())
    # A running maximum of the end, restarted for each parent: every parent's
    # values are lifted above the previous parent's so one accumulate serves all.
    group = np.cumsum(np.concatenate(([0], np.diff(owner) != 0)))
    lift = int(child_end.max()) - base + 1
    lifted = (child_end - base) + group * lift
    running = np.maximum.accumulate(lifted)
    previous = np.concatenate(([-1], running[:-1])) - group * lift  # < 0: from another parent
    begin = np.maximum(child_start - base, previous)
    covered = np.bincount(owner, weights=np.maximum(0, (child_end - base) - begin), minlength=len(start))
    return np.maximum(0, duration - covered.astype(np.int64))


@dataclass(frozen=True)
class TraceOutcome:
    """What Python decided per trace: its name, threshold, outcome, and whether it counts."""

    bt: str
    apdex_t_ms: float
    error: bool
    counted: bool  # stored now (not excluded, not stored before)


def rollup(window: Window, outcomes: Sequence[TraceOutcome]) -> Rollup:
    """The rollup of the counted traces of a window (as :meth:`Rollup.add` would make it)."""
    result = Rollup()
    counted = np.fromiter((o.counted for o in outcomes), bool, len(outcomes))
    traces = np.nonzero(counted)[0]
    if len(traces) == 0:
        return result
    entry = window.entry[traces]
    spans = window.spans
    starts = window.start[entry]
    durations = window.duration[entry]
    minutes = starts - starts % MINUTE_US

    # Business transactions: one group per (tenant, service, bt, minute).
    keys: dict[tuple[int, str, str, int], int] = {}
    group_of_trace = np.full(len(outcomes), -1, dtype=np.int64)
    for trace, minute in zip(traces.tolist(), minutes.tolist(), strict=True):
        head = spans[int(window.entry[trace])]
        key = (head.tenant_id, head.service, outcomes[trace].bt, minute)
        group_of_trace[trace] = keys.setdefault(key, len(keys))
    groups = group_of_trace[traces]
    size = len(keys)
    errors = np.fromiter((outcomes[t].error for t in traces.tolist()), np.int64, len(traces))
    thresholds = np.fromiter(
        (outcomes[t].apdex_t_ms * 1000 for t in traces.tolist()), np.float64, len(traces)
    )
    calls = np.bincount(groups, minlength=size)
    error_counts = np.bincount(groups, weights=errors, minlength=size)
    duration_sum = np.bincount(groups, weights=durations, minlength=size)
    # The longest per group: sort by (group, duration), take each group's last.
    by_group = np.lexsort((durations, groups))
    last = np.flatnonzero(np.diff(groups[by_group], append=size)) if len(groups) else np.zeros(0, np.int64)
    duration_max = np.zeros(size, dtype=np.int64)
    duration_max[groups[by_group][last]] = durations[by_group][last]
    satisfied = np.bincount(groups, weights=durations <= thresholds, minlength=size)
    tolerating = np.bincount(
        groups, weights=(durations > thresholds) & (durations <= 4 * thresholds), minlength=size
    )
    tier_us = window.tier_us[traces]
    tier_sum = np.stack(
        [np.bincount(groups, weights=tier_us[:, j], minlength=size) for j in range(len(TIERS))], axis=1
    ).astype(np.int64)
    latency = _sparse(groups, buckets(durations.astype(np.float64)))
    present = np.nonzero(tier_us)
    tier_latency = _sparse(
        groups[present[0]], present[1] * histogram.STRIDE + buckets(tier_us[present].astype(np.float64))
    )
    for key, group in keys.items():
        result.bts[key] = BtFigures(
            calls=int(calls[group]),
            errors=int(error_counts[group]),
            duration_sum_us=int(duration_sum[group]),
            duration_max_us=int(duration_max[group]),
            apdex_satisfied=int(satisfied[group]),
            apdex_tolerating=int(tolerating[group]),
            latency=latency.get(group, {}),
            tier_sum_us=tier_sum[group].tolist(),
            tier_latency=tier_latency.get(group, {}),
        )
    key_of_group = list(keys)
    _components(window, group_of_trace, key_of_group, result)
    _edges(window, group_of_trace, key_of_group, result)
    return result


def _sparse(groups: I64, keys: I64) -> dict[int, dict[int, int]]:
    """Counts of each key within each group: ``{group: {key: count}}``."""
    if len(groups) == 0:
        return {}
    combined = groups * (1 << 20) + keys
    unique, counts = np.unique(combined, return_counts=True)
    result: dict[int, dict[int, int]] = {}
    for value, count in zip(unique.tolist(), counts.tolist(), strict=True):
        result.setdefault(value >> 20, {})[value & ((1 << 20) - 1)] = count
    return result


def _components(
    window: Window, group_of_trace: I64, key_of_group: list[tuple[int, str, str, int]], result: Rollup
) -> None:
    spans = np.nonzero((window.component_code != 0) & (group_of_trace[window.trace_of] >= 0))[0]
    if len(spans) == 0:
        return
    groups = group_of_trace[window.trace_of[spans]]
    tiers = window.tier_code[spans]
    codes = window.component_code[spans]
    combined = (groups * len(TIERS) + tiers) * (len(window.strings.values) + 1) + codes
    unique, inverse = np.unique(combined, return_inverse=True)
    durations = window.duration[spans]
    calls = np.bincount(inverse)
    errors = np.bincount(inverse, weights=window.failed[spans])
    self_us = np.bincount(inverse, weights=window.self_us[spans])
    duration_us = np.bincount(inverse, weights=durations)
    width = len(window.strings.values) + 1
    for index, value in enumerate(unique.tolist()):
        code = value % width
        group, tier = divmod(value // width, len(TIERS))
        tenant, service, bt, minute = key_of_group[group]
        result.components[tenant, service, bt, minute, TIERS[tier], str(window.strings.values[code])] = (
            ComponentFigures(
                int(calls[index]), int(errors[index]), int(self_us[index]), int(duration_us[index])
            )
        )


def _edges(
    window: Window, group_of_trace: I64, key_of_group: list[tuple[int, str, str, int]], result: Rollup
) -> None:
    traces = window.trace_of[window.edge_span]
    counted = group_of_trace[traces] >= 0
    if not counted.any():
        return
    span_index = window.edge_span[counted]
    groups = group_of_trace[traces[counted]]
    tenants = np.array([key[0] for key in key_of_group], dtype=np.int64)[groups]
    minutes = np.array([key[3] for key in key_of_group], dtype=np.int64)[groups]
    identity = np.stack(
        [
            tenants,
            minutes,
            window.edge_source[counted],
            window.edge_target[counted],
            window.edge_kind[counted],
        ],
        axis=1,
    )
    unique, inverse = _unique_rows(identity)
    durations = window.duration[span_index]
    calls = np.bincount(inverse)
    errors = np.bincount(inverse, weights=window.failed[span_index])
    total = np.bincount(inverse, weights=durations)
    latency = _sparse(inverse, buckets(durations.astype(np.float64)))
    values = window.strings.values
    for index, (tenant, minute, source, target, kind) in enumerate(unique.tolist()):
        result.edges[tenant, minute, str(values[source]), str(values[target]), _EDGE_KINDS[kind]] = (
            EdgeFigures(int(calls[index]), int(errors[index]), int(total[index]), latency.get(index, {}))
        )
