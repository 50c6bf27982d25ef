"""Rollups add traces up; top components stay bounded."""

from __future__ import annotations

from tierscope.processing.assemble import TraceSummary
from tierscope.processing.rollup import MINUTE_US, OTHER_COMPONENT, Rollup


def summary(
    duration_us: int, components: list[tuple[str, str, int, int, bool]], error: bool = False
) -> TraceSummary:
    return TraceSummary(
        tenant_id=1,
        trace_id=b"t" * 16,
        start_us=10 * MINUTE_US + 5,
        duration_us=duration_us,
        service="crm-web",
        entry_name="GET /leads",
        entry_kind=2,
        entry_attributes={},
        error=error,
        error_tier=None,
        error_component=None,
        tier_us=[0, 0, 0, duration_us, 0, 0, 0, 0, 0],
        span_count=1,
        components=components,
    )


def test_apdex_counts_follow_the_threshold() -> None:
    rollup = Rollup()
    for duration_ms in (100, 500, 501, 2000, 2001):
        rollup.add(summary(duration_ms * 1000, []), "GET /leads", apdex_t_ms=500)
    figures = rollup.bts[1, "crm-web", "GET /leads", 10 * MINUTE_US]
    assert (figures.calls, figures.apdex_satisfied, figures.apdex_tolerating) == (5, 2, 2)


def test_components_beyond_the_top_are_summed_as_other() -> None:
    rollup = Rollup()
    rollup.add(
        summary(10_000, [("db", f"SELECT {i}", i * 10, i * 10, False) for i in range(1, 31)]), "bt", 500
    )
    rollup.keep_top_components(5)
    names = sorted(key[5] for key in rollup.components)
    assert len(names) == 6
    assert OTHER_COMPONENT in names
    other = rollup.components[1, "crm-web", "bt", 10 * MINUTE_US, "db", OTHER_COMPONENT]
    assert other.calls == 25
    assert other.self_us == sum(i * 10 for i in range(1, 26))
