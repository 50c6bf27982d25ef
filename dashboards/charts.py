"""The report's charts (matplotlib, no display): SVG for HTML, PNG for PDF."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot

import matplotlib.pyplot as plt

from tierscope.collector.tiers import TIERS
from tierscope.dashboards.console.svg import TIER_COLOURS  # one palette: console and reports agree
from tierscope.dashboards.report import Report


def _render(figure: plt.Figure, kind: str) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format=kind, bbox_inches="tight", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def compliance_trend(report: Report, kind: str) -> bytes | None:
    """Each SLO's compliance per period, against its target."""
    if not report.compliance:
        return None
    figure, axes = plt.subplots(figsize=(7, 3))
    for item in report.compliance:
        labels = [label for label, _ in item.trend]
        values = [None if sli is None else sli * 100 for _, sli in item.trend]
        line = axes.plot(labels, values, marker="o", label=item.name)[0]
        axes.axhline(item.target * 100, color=line.get_color(), linestyle=":", linewidth=1)
    axes.set_ylabel("compliance %")
    axes.set_title("Compliance per period (dotted: target)")
    axes.legend(fontsize=7, loc="lower left")
    axes.grid(alpha=0.3)
    return _render(figure, kind)


def time_per_tier(report: Report, kind: str, limit: int = 8) -> bytes | None:
    """Where the time of the slowest transactions went (mean per call)."""
    rows = [t for t in report.transactions[:limit] if t["tier_ms"]]
    if not rows:
        return None
    figure, axes = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    names = [f"{t['service']} / {t['bt']}"[:48] for t in rows][::-1]
    left = [0.0] * len(rows)
    for tier in TIERS:
        widths = [t["tier_ms"].get(tier, 0.0) for t in rows][::-1]
        if any(widths):
            axes.barh(names, widths, left=left, label=tier, color=TIER_COLOURS[tier])
            left = [a + b for a, b in zip(left, widths, strict=True)]
    axes.set_xlabel("ms per call")
    axes.set_title("Time per tier of the slowest transactions")
    axes.legend(fontsize=7, ncol=5, loc="lower right")
    axes.tick_params(axis="y", labelsize=7)
    return _render(figure, kind)


def site_waits(report: Report, kind: str) -> bytes | None:
    """What users at each site waited (p75), with the mean network and browser time."""
    rows = report.experience_sites[:10]
    if not rows:
        return None
    figure, axes = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    names = [str(s["site"])[:40] for s in rows][::-1]
    axes.barh(names, [s["p75_ms"] for s in rows][::-1], color="#d1d5db", label="waited (p75)")
    network = [s["network_ms"] or 0 for s in rows][::-1]
    browser = [s["browser_ms"] or 0 for s in rows][::-1]
    axes.barh(names, network, height=0.4, color=TIER_COLOURS["network"], label="network (mean)")
    axes.barh(names, browser, height=0.4, left=network, color=TIER_COLOURS["browser"], label="browser (mean)")
    axes.set_xlabel("ms")
    axes.set_title("What users waited, by site")
    axes.legend(fontsize=7, loc="lower right")
    return _render(figure, kind)


def capacity(report: Report, kind: str) -> bytes | None:
    """Per forecast transaction: load now, the busiest hour served, and the busiest hour in 30 days."""
    rows = report.outlooks
    if not rows:
        return None
    figure, axes = plt.subplots(figsize=(7, 0.6 * len(rows) + 1.4))
    names = [f"{o.service} / {o.bt}"[:48] for o in rows][::-1]
    positions = range(len(rows))
    bars = (
        ("average now", [o.throughput_now for o in rows], "#9ca3af"),
        ("busiest hour served", [o.busiest_seen for o in rows], "#4e79a7"),
        ("busiest hour in 30 days", [o.busiest_at_horizon for o in rows], "#e15759"),
    )
    for offset, (label, values, colour) in enumerate(bars):
        axes.barh(
            [p + (offset - 1) * 0.27 for p in positions], values[::-1], height=0.25, label=label, color=colour
        )
    axes.set_yticks(list(positions), names, fontsize=7)
    axes.set_xlabel("requests per minute")
    axes.set_title("Capacity: load and its trend")
    axes.legend(fontsize=7, loc="lower right")
    return _render(figure, kind)
