"""The processor's own metrics. ``tierscope up`` runs the processor in a process
of its own, writing to the same multiprocess directory as the collector
workers, so the collector's ``/metrics`` shows them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from tierscope.processing.processor import CycleReport


class ProcessorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.traces = Counter("tierscope_processing_traces", "Traces processed and rolled up.", registry=r)
        self.spans = Counter("tierscope_processing_spans", "Spans of the traces processed.", registry=r)
        self.late_spans = Counter(
            "tierscope_processing_late_spans",
            "Spans that arrived after their trace was processed (counted, not rolled up).",
            registry=r,
        )
        self.deferred = Counter(
            "tierscope_processing_deferred_traces",
            "Times a trace was left for a later window because it was still receiving spans.",
            registry=r,
        )
        self.excluded = Counter(
            "tierscope_processing_excluded_traces", "Traces excluded by naming rules.", registry=r
        )
        self.overflow = Counter(
            "tierscope_bt_overflow", "Traces named _other because their service has too many BTs.", registry=r
        )
        self.cycle_seconds = Histogram(
            "tierscope_processing_cycle_seconds",
            "Time for one processing cycle.",
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.lag = Gauge(
            "tierscope_processing_lag_seconds",
            "How far behind the settled horizon processing is.",
            registry=r,
            multiprocess_mode="max",
        )

    def observe(self, report: CycleReport, seconds: float) -> None:
        self.traces.inc(report.traces)
        self.spans.inc(report.spans)
        self.late_spans.inc(report.late_spans)
        self.deferred.inc(report.deferred)
        self.excluded.inc(report.excluded)
        self.overflow.inc(report.overflow)
        self.cycle_seconds.observe(seconds)
        self.lag.set(report.lag_seconds)
