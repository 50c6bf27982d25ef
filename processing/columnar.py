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
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tierscope.collector.tiers import TIERS
from tierscope.processing import histogram
from tierscope.processing.rollup import MINUTE_US, BtFigures, ComponentFigures, EdgeFigures, Rollup
from tierscope.store.processing import SpanRow
from tierscope.store.span_columns import SpanColumns

TIER_CODES = {tier: index for index, tier in enumerate(TIERS)}
_APP = TIER_CODES["app"]
_TIER_CODE_OR_APP = defaultdict(lambda: _APP, TIER_CODES)  # an unknown tier counts as app
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
U64 = npt.NDArray[np.uint64]


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

    def codes_of(self, values: list[str | None]) -> I64:
        """The codes of many values. A column repeats few distinct values: each
        is coded once, and the rest is dictionary lookups in C (calling
        :meth:`code` per value was half the time of building a window)."""
        for value in dict.fromkeys(values):
            self.code(value)
        return np.fromiter(map(self.codes.__getitem__, values), np.int64, len(values))


@dataclass
class Window:
    """Every ready trace of a window, as columns over all their spans. The spans
    of trace *t* are ``columns[offsets[t]:offsets[t + 1]]``."""

    columns: SpanColumns
    offsets: I64  # per trace, where its spans begin; one more at the end
    trace_of: I64  # per span: which trace
    start: I64
    duration: I64
    failed: I64  # per span: 1 if its status is error
    self_us: I64
    tier_us: I64  # per trace and tier: self time
    entry: I64  # per trace: the entry span (an index into spans)
    strings: _Strings
    component_code: I64  # per span; 0 for none
    tier_code: I64
    service_code: I64
    edge_source: I64  # per edge (service code), edges only for spans that make one
    edge_target: I64
    edge_kind: I64
    edge_span: I64  # which span each edge is

    @property
    def trace_count(self) -> int:
        return len(self.offsets) - 1

    def span(self, index: int) -> SpanRow:
        return self.columns.row(index)

    def trace_spans(self, trace: int) -> list[SpanRow]:
        return [self.columns.row(i) for i in range(int(self.offsets[trace]), int(self.offsets[trace + 1]))]

    def span_count(self, trace: int) -> int:
        return int(self.offsets[trace + 1] - self.offsets[trace])

    @classmethod
    def of(cls, traces: list[list[SpanRow]], component_of: Callable[[SpanRow], str | None]) -> Window:
        """The window of these traces, given as rows (the reference path, tests)."""
        spans = [span for trace in traces for span in trace]
        sizes = np.array([len(t) for t in traces], dtype=np.int64)
        return cls.of_columns(SpanColumns.of_rows(spans), sizes, component_of)

    @classmethod
    def of_columns(
        cls, columns: SpanColumns, sizes: I64, component_of: Callable[[SpanRow], str | None]
    ) -> Window:
        """The window of spans given as columns, ordered by trace: the first
        ``sizes[0]`` spans are trace 0, and so on."""
        count = len(columns)
        traces = len(sizes)
        offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
        trace_of = np.repeat(np.arange(traces, dtype=np.int64), sizes)
        start, duration, kind = columns.start, columns.duration, columns.kind
        failed_ = (columns.status == 2).astype(np.int64)
        strings = _Strings()
        code = strings.code
        tier_names = columns.tier.tolist()
        tier_code = np.fromiter(map(_TIER_CODE_OR_APP.__getitem__, tier_names), np.int64, count)

        # Each span's parent, within its own trace: find (trace, parent id)
        # among the sorted (trace, span id) pairs.
        by_id = np.lexsort((columns.span, trace_of))
        sorted_trace, sorted_id = trace_of[by_id], columns.span[by_id]
        where = _find_pairs(sorted_trace, sorted_id, trace_of, columns.parent)
        has_parent = columns.parent != 0
        found = has_parent & (where >= 0)
        parent = np.where(found, by_id[np.maximum(where, 0)], -1)
        self_us = _self_times(start, duration, parent)
        tier_us = (
            np.bincount(trace_of * len(TIERS) + tier_code, weights=self_us, minlength=traces * len(TIERS))
            .astype(np.int64)
            .reshape(traces, len(TIERS))
        )

        # The entry: the first server span, else the first consumer, else the first root.
        rank = np.where(kind == SERVER, 0, np.where(kind == CONSUMER, 1, np.where(~has_parent, 2, 3)))
        order = np.lexsort((columns.span, start, rank, trace_of))
        _, first = np.unique(trace_of[order], return_index=True)
        entry = order[first]

        # A component depends on these fields only, and a window repeats few
        # combinations: decide each once (the keys are built by zip, in C).
        services, peers = columns.service.tolist(), columns.peer.tolist()
        keys = list(
            zip(
                tier_names,
                kind.tolist(),
                columns.component.tolist(),
                columns.name.tolist(),
                peers,
                columns.tenant.tolist(),
                columns.resource.tolist(),
                services,
                strict=True,
            )
        )
        first_of_key = dict(zip(reversed(keys), range(count - 1, -1, -1), strict=True))
        component_of_key = {key: code(component_of(columns.row(i))) for key, i in first_of_key.items()}
        component_code = np.fromiter(map(component_of_key.__getitem__, keys), np.int64, count)
        service_code = strings.codes_of(services)
        peer_code = strings.codes_of(peers)

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
            columns=columns,
            offsets=offsets,
            trace_of=trace_of,
            start=start,
            duration=duration,
            failed=failed_,
            self_us=self_us,
            tier_us=tier_us,
            entry=entry,
            strings=strings,
            component_code=component_code,
            tier_code=tier_code,
            service_code=service_code,
            edge_source=service_code[makes_edge][keep],
            edge_target=target[keep],
            edge_kind=edge_kind[keep],
            edge_span=makes_edge[keep],
        )


def _find_pairs(sorted_major: I64, sorted_minor: U64, major: I64, minor: U64) -> I64:
    """For each (major, minor) pair, its position among the lexicographically
    sorted pairs ``(sorted_major, sorted_minor)``, or -1 where it is absent."""
    if len(sorted_major) == 0:
        return np.full(len(major), -1, dtype=np.int64)
    # Within one major value the minors are sorted: search there.
    low = np.searchsorted(sorted_major, major, side="left")
    high = np.searchsorted(sorted_major, major, side="right")
    where = np.full(len(major), -1, dtype=np.int64)
    # Vectorized binary search over each row's own [low, high) range.
    lo, hi = low.copy(), high.copy()
    while True:
        active = lo < hi
        if not active.any():
            break
        mid = (lo + hi) // 2
        value = sorted_minor[np.minimum(mid, len(sorted_minor) - 1)]
        go_right = active & (value < minor)
        go_left = active & ~go_right
        lo = np.where(go_right, mid + 1, lo)
        hi = np.where(go_left, mid, hi)
    match = (lo < high) & (sorted_minor[np.minimum(lo, len(sorted_minor) - 1)] == minor)
    where[match] = lo[match]
    return where


def unique_rows(rows: I64) -> tuple[I64, I64]:
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
    tenants = window.columns.tenant[entry].tolist()
    services = window.columns.service[entry].tolist()
    starts = window.start[entry]
    durations = window.duration[entry]
    minutes = starts - starts % MINUTE_US

    # Business transactions: one group per (tenant, service, bt, minute).
    keys: dict[tuple[int, str, str, int], int] = {}
    group_of_trace = np.full(len(outcomes), -1, dtype=np.int64)
    for trace, tenant, service, minute in zip(
        traces.tolist(), tenants, services, minutes.tolist(), strict=True
    ):
        key = (tenant, service, outcomes[trace].bt, minute)
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
    unique, inverse = unique_rows(identity)
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
