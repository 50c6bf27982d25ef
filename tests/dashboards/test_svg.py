"""The console's inline SVG charts: what a reader sees of sparse series."""

from __future__ import annotations

import re

from tierscope.dashboards.console import svg


def test_a_lone_minute_is_drawn_as_a_dot_and_a_line_needs_no_dot() -> None:
    labels = [f"10:0{i}" for i in range(5)]
    lone = str(svg.lines({"p95": [None, None, 120.0, None, None]}, labels, "ms"))
    (dot,) = re.findall(r'<circle cx="([\d.]+)" cy="([\d.]+)"', lone)
    assert float(dot[0]) == 48 + 2 * (640 - 48 - 8) / 4  # the third of five steps
    assert float(dot[1]) < 160 - 20  # above the axis, not on it
    joined = str(svg.lines({"p95": [100.0, 110.0, 120.0, 130.0, 140.0]}, labels, "ms"))
    assert "<circle" not in joined
    assert joined.count("<polyline") == 1


def test_names_in_a_chart_are_escaped() -> None:
    drawn = str(svg.lines({"<script>x</script>": [1.0, 2.0]}, ["a", "<b>"], "ms"))
    assert "<script>" not in drawn
    assert "<b>" not in drawn
