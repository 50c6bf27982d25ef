"""Adding processed traces up: per business transaction and minute, per
component, per service-map edge.

A :class:`Rollup` collects one processing cycle's traces in memory, every
component included; processing/writer.py then merges it into the minute, hour
and day rows, where the components are bounded to the top N per stored bucket. Every
figure is a sum or a mergeable histogram, so adding cycles, collectors and
resolutions together is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tierscope.collector.tiers import TIERS
from tierscope.processing import histogram
from tierscope.processing.assemble import TraceSummary

MINUTE_US = 60_000_000
OTHER_COMPONENT = "_other"

BtKey = tuple[int, str, str, int]  # tenant, service, bt, minute (µs since the epoch)
ComponentKey = tuple[int, str, str, int, str, str]  # tenant, service, bt, minute, tier, component
EdgeKey = tuple[int, int, str, str, str]  # tenant, minute, source, target, target kind


@dataclass
class BtFigures:
    calls: int = 0
    errors: int = 0
    duration_sum_us: int = 0
    duration_max_us: int = 0
    apdex_satisfied: int = 0
    apdex_tolerating: int = 0
    latency: histogram.Counts = field(default_factory=dict)
    tier_sum_us: list[int] = field(default_factory=lambda: [0] * len(TIERS))
    tier_latency: histogram.Counts = field(default_factory=dict)

    def add(self, other: BtFigures) -> None:
        self.calls += other.calls
        self.errors += other.errors
        self.duration_sum_us += other.duration_sum_us
        self.duration_max_us = max(self.duration_max_us, other.duration_max_us)
        self.apdex_satisfied += other.apdex_satisfied
        self.apdex_tolerating += other.apdex_tolerating
        histogram.merge_into(self.latency, other.latency)
        self.tier_sum_us = [a + b for a, b in zip(self.tier_sum_us, other.tier_sum_us, strict=True)]
        histogram.merge_into(self.tier_latency, other.tier_latency)


@dataclass
class ComponentFigures:
    calls: int = 0
    errors: int = 0
    self_us: int = 0
    duration_us: int = 0

    def add(self, other: ComponentFigures) -> None:
        self.calls += other.calls
        self.errors += other.errors
        self.self_us += other.self_us
        self.duration_us += other.duration_us


@dataclass
class EdgeFigures:
    calls: int = 0
    errors: int = 0
    duration_sum_us: int = 0
    latency: histogram.Counts = field(default_factory=dict)

    def add(self, other: EdgeFigures) -> None:
        self.calls += other.calls
        self.errors += other.errors
        self.duration_sum_us += other.duration_sum_us
        histogram.merge_into(self.latency, other.latency)


@dataclass
class Rollup:
    bts: dict[BtKey, BtFigures] = field(default_factory=dict)
    components: dict[ComponentKey, ComponentFigures] = field(default_factory=dict)
    edges: dict[EdgeKey, EdgeFigures] = field(default_factory=dict)

    def add(self, summary: TraceSummary, bt: str, apdex_t_ms: float) -> None:
        """Count one trace under its business transaction."""
        minute = summary.start_us - summary.start_us % MINUTE_US
        key = (summary.tenant_id, summary.service, bt, minute)
        figures = self.bts.get(key)
        if figures is None:
            figures = self.bts[key] = BtFigures()
        duration = summary.duration_us
        figures.calls += 1
        figures.errors += summary.error
        figures.duration_sum_us += duration
        figures.duration_max_us = max(figures.duration_max_us, duration)
        threshold = apdex_t_ms * 1000
        if duration <= threshold:
            figures.apdex_satisfied += 1
        elif duration <= 4 * threshold:
            figures.apdex_tolerating += 1
        histogram.add(figures.latency, duration)
        for index, tier_us in enumerate(summary.tier_us):
            if tier_us:
                figures.tier_sum_us[index] += tier_us
                histogram.add(figures.tier_latency, tier_us, dimension=index)
        for tier, component, self_us, duration_us, failed in summary.components:
            ckey = (summary.tenant_id, summary.service, bt, minute, tier, component)
            cfig = self.components.get(ckey)
            if cfig is None:
                cfig = self.components[ckey] = ComponentFigures()
            cfig.calls += 1
            cfig.errors += failed
            cfig.self_us += self_us
            cfig.duration_us += duration_us
        for edge in summary.edges:
            ekey = (summary.tenant_id, minute, edge.source, edge.target, edge.target_kind)
            efig = self.edges.get(ekey)
            if efig is None:
                efig = self.edges[ekey] = EdgeFigures()
            efig.calls += 1
            efig.errors += edge.error
            efig.duration_sum_us += edge.duration_us
            histogram.add(efig.latency, edge.duration_us)
