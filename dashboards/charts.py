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
