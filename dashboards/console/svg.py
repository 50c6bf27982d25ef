"""Small inline SVG charts for the console (no script, no library).

Every text that can come from telemetry goes through markupsafe's escape; the
numbers are formatted here. The returned Markup is safe to place in a template.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from markupsafe import Markup, escape

from tierscope.collector.tiers import TIERS

TIER_COLOURS = dict(
    zip(
        TIERS,
        ("#8e6bbf", "#4e79a7", "#59a14f", "#f28e2b", "#edc948", "#e15759", "#ff9da7", "#9c755f", "#76b7b2"),
        strict=True,
    )
)


SERVER = "#9ca3af"


def tier_bar(tier_ms: dict[str, float], width: int = 220, height: int = 14) -> Markup:
    """One horizontal bar split by tier (proportions of the mean time per call)."""
    total = sum(tier_ms.values())
    if total <= 0:
        return Markup("")
    parts, x = [], 0.0
    # "server": an untraced experience's server time, not split into tiers (grey).
    for tier in (*TIERS, "server"):
        value = tier_ms.get(tier, 0.0)
        if value <= 0:
            continue
        w, colour = width * value / total, TIER_COLOURS.get(tier, SERVER)
        parts.append(
            f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="{height}" fill="{colour}">'
            f"<title>{escape(tier)}: {value:.1f} ms</title></rect>"
        )
        x += w
    return Markup(
        f'<svg class="bar" width="{width}" height="{height}" role="img" aria-label="time per tier">'
        + "".join(parts)
        + "</svg>"
    )


def lines(
    series: dict[str, Sequence[float | None]],
    labels: Sequence[str],
    unit: str,
    width: int = 640,
    height: int = 160,
) -> Markup:
    """A line chart of one or more series over the same steps."""
    values = [v for points in series.values() for v in points if v is not None]
    if not values or len(labels) < 2:
        return Markup('<p class="empty">no data in this window</p>')
    top = max(values) * 1.1 or 1.0
    left, bottom = 48, 20
    plot_w, plot_h = width - left - 8, height - bottom - 8
    step = plot_w / (len(labels) - 1)
    out = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img">']
    for fraction in (0, 0.5, 1):
        y = 8 + plot_h * (1 - fraction)
        out.append(f'<line x1="{left}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(
            f'<text x="{left - 4}" y="{y + 4:.1f}" class="axis" text-anchor="end">{top * fraction:.0f}</text>'
        )
    for colour, (name, points) in zip(
        ("#4e79a7", "#e15759", "#59a14f", "#f28e2b"), series.items(), strict=False
    ):
        path = " ".join(
            f"{left + i * step:.1f},{8 + plot_h * (1 - v / top):.1f}"
            for i, v in enumerate(points)
            if v is not None
        )
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5">')
        out.append(f"<title>{escape(name)}</title></polyline>")
        # A point with no neighbour draws no line: a dot shows it (a new
        # transaction's first minute, or one busy minute in a quiet window).
        for i, v in enumerate(points):
            alone = (i == 0 or points[i - 1] is None) and (i == len(points) - 1 or points[i + 1] is None)
            if v is not None and alone:
                x, y = left + i * step, 8 + plot_h * (1 - v / top)
                out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}" class="point"/>')
    out.append(f'<text x="{left}" y="{height - 4}" class="axis">{escape(labels[0])}</text>')
    out.append(
        f'<text x="{width - 8}" y="{height - 4}" class="axis" text-anchor="end">{escape(labels[-1])}</text>'
    )
    out.append(f'<text x="4" y="12" class="axis">{escape(unit)}</text></svg>')
    return Markup("".join(out))


def experience_segments(experience: dict[str, Any], server_ms: float) -> list[tuple[str, str, float, float]]:
    """What the user waited, on the browser's clock: (label, tier, start ms, length ms).

    The server's time sits between the request being sent and the response
    starting to arrive; the rest of that gap is network, split evenly between the
    way there and back (the browser cannot tell them apart). Browser time is from
    the response's end to the end of the action — the same split the processor
    stores in ``tier_ms``.
    """
    timing = experience.get("timing") or {}
    total = float(experience["duration_ms"])
    response_end = float(timing.get("responseEnd", total))
    request_start = float(timing.get("requestStart", 0.0))
    response_start = float(timing.get("responseStart", response_end))
    server = min(server_ms, response_end)
    server_start = request_start + max(0.0, (response_start - request_start - server) / 2)
    server_start = min(server_start, response_end - server)
    name = experience.get("bt") or experience.get("page") or ""
    return [
        (f"user · {name}", "experience", 0.0, total),
        ("network · request", "network", 0.0, server_start),
        ("network · response", "network", server_start + server, response_end - server_start - server),
        ("browser · render and scripts", "browser", response_end, total - response_end),
    ]


def waterfall(
    spans: list[dict[str, Any]], experience: dict[str, Any] | None = None, width: int = 900, row: int = 18
) -> Markup:
    """Spans as bars on the trace's time line, indented by depth, coloured by tier;
    with the experience the trace served, its browser and network segments above."""
    if not spans:
        return Markup("")
    start = min(s["start_unix_nano"] for s in spans)
    end = max(s["start_unix_nano"] + s["duration_ms"] * 1e6 for s in spans)
    depth = _depths(spans)
    roots = [s for s in spans if depth[s["span_id"]] == 0] or spans
    server_ms = max(s["duration_ms"] for s in roots)
    segments: list[tuple[str, str, float, float]] = []
    offset_ms = 0.0  # where the server's first span starts on the drawn time line
    if experience is not None:
        segments = experience_segments(experience, server_ms)
        offset_ms = segments[1][3]
    total_ms = max((end - start) / 1e6 + offset_ms, *(s[2] + s[3] for s in segments), 0.001)
    label_w = 320
    scale = (width - label_w - 10) / total_ms
    ordered = sorted(spans, key=lambda s: (s["start_unix_nano"], depth[s["span_id"]]))
    out = [
        f'<svg class="waterfall" viewBox="0 0 {width} {row * (len(ordered) + len(segments)) + 4}" role="img">'
    ]
    y = 2
    for label, tier, at, length in segments:
        if length <= 0 and tier != "experience":
            continue
        colour = TIER_COLOURS.get(tier, "#9ca3af")
        out.append(
            f'<text x="4" y="{y + 12}" class="label">{escape(label[:60])}</text>'
            f'<rect x="{label_w + at * scale:.1f}" y="{y}" width="{max(1.0, length * scale):.1f}" '
            f'height="{row - 5}" fill="{colour}" class="segment {tier}">'
            f"<title>{escape(label)} — {length:.1f} ms</title></rect>"
        )
        y += row
    for span in ordered:
        x = label_w + ((span["start_unix_nano"] - start) / 1e6 + offset_ms) * scale
        w = max(1.0, span["duration_ms"] * scale)
        colour = TIER_COLOURS.get(span["tier"], "#999")
        label = f"{span['service']} · {span['name']}"
        indent = 4 + 10 * depth[span["span_id"]]
        classes = "span failed" if span["status"] == "error" else "span"
        out.append(
            f'<text x="{indent}" y="{y + 12}" class="label">{escape(label[:60])}</text>'
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 5}" fill="{colour}" class="{classes}">'
            f"<title>{escape(span['tier'])}: {escape(label)} — {span['duration_ms']:.1f} ms</title></rect>"
        )
        y += row
    out.append("</svg>")
    return Markup("".join(out))


def _depths(spans: list[dict]) -> dict[str, int]:
    parents = {s["span_id"]: s["parent_span_id"] for s in spans}
    depths: dict[str, int] = {}
    for span_id in parents:
        depth, current, seen = 0, parents.get(span_id), {span_id}
        while current in parents and current not in seen:
            seen.add(current)
            depth, current = depth + 1, parents[current]
        depths[span_id] = min(depth, 12)
    return depths


KIND_COLOURS = {
    "service": "#4e79a7",
    "db": "#e15759",
    "cache": "#ff9da7",
    "queue": "#9c755f",
    "external": "#76b7b2",
}


def service_map(nodes: list[dict], edges: list[dict], width: int = 900) -> Markup:
    """Services and what they call, in columns: entry services, services called
    by others, then databases, caches, queues and external systems."""
    if not nodes:
        return Markup("")
    called = {e["target"] for e in edges if e["target_kind"] == "service"}
    columns: list[list[str]] = [[], [], []]
    for node in nodes:
        column = 2 if node["kind"] != "service" else (1 if node["id"] in called else 0)
        columns[column].append(node["id"])
    row, box_w, box_h = 44, 220, 26
    height = max(len(c) for c in columns) * row + 10
    xs = [10, (width - box_w) // 2, width - box_w - 10]
    where = {}
    for index, column in enumerate(columns):
        for position, node in enumerate(column):
            where[node] = (xs[index], 8 + position * row)
    kinds = {n["id"]: n["kind"] for n in nodes}
    out = [f'<svg class="map" viewBox="0 0 {width} {height}" role="img" aria-label="service map">']
    for edge in edges:
        (x1, y1), (x2, y2) = where[edge["source"]], where[edge["target"]]
        errors = ' class="failing"' if edge["errors"] else ""
        out.append(
            f'<line x1="{x1 + box_w}" y1="{y1 + box_h / 2}" x2="{x2}" y2="{y2 + box_h / 2}"{errors}>'
            f"<title>{escape(edge['source'])} → {escape(edge['target'])}: {edge['calls']:,} calls, "
            f"{edge['errors']:,} errors, p95 {edge['p95_ms'] or 0:.1f} ms</title></line>"
        )
    for node, (x, y) in where.items():
        colour = KIND_COLOURS.get(kinds[node], "#999")
        out.append(
            f'<rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="4" fill="{colour}"/>'
            f'<text x="{x + 8}" y="{y + 17}" class="node">{escape(node[:34])}</text>'
        )
    out.append("</svg>")
    return Markup("".join(out))
