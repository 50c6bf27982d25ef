"""The pure parts, with exact numbers: lifecycle steps, burn-rate windows and the
traffic guard, rules documents, routes and mutes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tierscope.alerting import burn, lifecycle, routing
from tierscope.alerting.impact import priority
from tierscope.alerting.mute import AnyOf, Window
from tierscope.alerting.rules import ConfigError, effective_rules, parse
from tierscope.slo.budget import Events

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
M = timedelta(minutes=1)


def run(series: list[bool], for_: timedelta, keep: timedelta) -> list[str | None]:
    """States after each minute's evaluation of a condition series."""
    current, states = None, []
    for n, active in enumerate(series):
        transition = lifecycle.step(current, active, T0 + n * M, for_, keep)
        current = transition.lifecycle
        states.append(None if current is None else current.state)
    return states


@pytest.mark.parametrize(
    ("series", "for_", "keep", "expected"),
    [
        pytest.param(
            [1, 1, 1], 0 * M, 0 * M, ["firing", "firing", "firing"], id="without for it fires at once"
        ),
        pytest.param(
            [1, 1, 1, 0],
            2 * M,
            0 * M,
            ["pending", "pending", "firing", "resolved"],
            id="with for 2m it fires on the third evaluation and resolves on the first false one",
        ),
        pytest.param(
            [1, 0, 1, 1],
            2 * M,
            0 * M,
            ["pending", None, "pending", "pending"],
            id="a pending alert whose condition stops is dropped and starts over",
        ),
        pytest.param(
            [1, 0, 1, 0, 0, 0],
            0 * M,
            2 * M,
            ["firing", "firing", "firing", "firing", "resolved", None],
            id="keep_firing_for bridges a flapping condition and resolves 2m after it last held",
        ),
    ],
)
def test_lifecycle_steps(
    series: list[int], for_: timedelta, keep: timedelta, expected: list[str | None]
) -> None:
    assert run([bool(x) for x in series], for_, keep) == expected


def test_an_acknowledged_alert_stays_acknowledged_until_it_resolves() -> None:
    acked = lifecycle.Lifecycle("acknowledged", T0, T0, started_at=T0)
    assert lifecycle.step(acked, True, T0 + M, M, M).lifecycle.state == "acknowledged"
    done = lifecycle.step(acked, False, T0 + M, M, M)
    assert (done.lifecycle.state, done.notify) == ("resolved", "resolved")


@pytest.mark.parametrize(
    ("pair", "factor"),
    [
        pytest.param(burn.WINDOWS[0], 14.4, id="2 percent of 30 days in 1h is burn rate 14.4"),
        pytest.param(burn.WINDOWS[1], 6.0, id="5 percent in 6h is burn rate 6"),
        pytest.param(burn.WINDOWS[2], 3.0, id="10 percent in 1 day is burn rate 3"),
        pytest.param(burn.WINDOWS[3], 1.0, id="10 percent in 3 days is burn rate 1"),
    ],
)
def test_burn_rate_factors_come_from_budget_shares(pair: burn.WindowPair, factor: float) -> None:
    assert pair.factor == pytest.approx(factor)


def events(
    long_total: float, long_bad: float, short_total: float, short_bad: float
) -> dict[timedelta, Events]:
    """The same events in every long window and every short window (enough for one pair at a time)."""
    found = {}
    for pair in burn.WINDOWS:
        found[pair.long] = Events(long_total, long_bad)
        found[pair.short] = Events(short_total, short_bad)
    return found


def test_a_fast_burn_in_both_windows_is_critical() -> None:
    result = burn.judge(events(1000, 20, 100, 2), target=0.999, min_requests=100)
    assert result.severity == "critical"
    assert result.long_rate == pytest.approx(20.0)


def test_one_error_at_night_does_not_page() -> None:
    """Three requests, one failed: a burn rate of 333, but too little traffic to mean anything."""
    assert burn.judge(events(3, 1, 1, 1), target=0.999, min_requests=100).severity is None


def test_a_burn_that_has_stopped_in_the_short_window_does_not_alert() -> None:
    assert burn.judge(events(1000, 20, 100, 0), target=0.999, min_requests=100).severity is None


def test_a_slow_burn_is_a_warning() -> None:
    result = burn.judge(events(10000, 40, 1000, 4), target=0.999, min_requests=100)  # rate 4 both
    assert result.severity == "warning"


def test_defaults_cover_every_slo_and_transaction_and_a_rule_of_the_same_name_replaces_one() -> None:
    config = parse("rules:\n  - {name: baseline-latency, kind: baseline, for: 5m}\n")
    found = {r.name: r for r in effective_rules(config, ["checkout-availability"])}
    assert set(found) == {
        "baseline-latency",
        "baseline-errors",
        "baseline-network",
        "baseline-browser",
        "slo-burn:checkout-availability",
    }
    assert found["baseline-latency"].for_ == timedelta(minutes=5)
    assert effective_rules(parse("defaults: false\n"), ["x"]) == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param(
            "rules:\n  - {name: a, kind: threshold}\n", "needs 'above'", id="a threshold needs a limit"
        ),
        pytest.param("rules:\n  - {name: a, kind: slo_burn}\n", "needs 'slo'", id="a burn rule needs an SLO"),
        pytest.param(
            "rules:\n  - {name: a, kind: baseline, for: soon}\n", "rules.0.for", id="a bad duration is named"
        ),
        pytest.param(
            "routes:\n  - receiver: nobody\n", "unknown receiver", id="a route to nowhere is refused"
        ),
        pytest.param("receivers:\n  - name: r\n", "exactly one", id="a receiver needs one target"),
        pytest.param("- just a list\n", "mapping", id="the document is a mapping"),
    ],
)
def test_bad_documents_are_refused_with_the_field(text: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse(text)


ROUTED = parse("""
receivers:
  - {name: pager, webhook: {url: 'https://pager.example/hook'}}
  - {name: shop-team, chat: {url: 'https://chat.example/hook'}}
  - {name: everyone, email: {host: mail.example, from: a@example.com, to: [b@example.com]}}
routes:
  - {receiver: pager, severity: [critical], continue: true}
  - {receiver: shop-team, service: [Order-to-cash]}
  - {receiver: everyone}
""")


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        pytest.param(
            {"severity": ["critical"], "service": ["shop"], "business_service": ["Order-to-cash"]},
            ["pager", "shop-team"],
            id="critical pages and continues to the service's team",
        ),
        pytest.param(
            {"severity": ["warning"], "service": ["shop"]},
            ["everyone"],
            id="a warning elsewhere goes to the catch-all",
        ),
        pytest.param(
            {"severity": ["critical"], "service": ["erp"]},
            ["pager", "everyone"],
            id="continue falls through to the catch-all",
        ),
    ],
)
def test_routes_by_severity_and_service(labels: dict[str, list[str]], receivers: list[str]) -> None:
    assert routing.receivers_for(ROUTED, labels) == receivers


def test_silences_and_maintenance_windows_mute_through_one_interface() -> None:
    silence = Window(T0, T0 + 60 * M, {"tier": "db"})
    maintenance = Window(T0 + 120 * M, T0 + 180 * M, {"service": "shop"}, kind="maintenance")
    muter = AnyOf((silence, maintenance))
    db_alert = {"tier": ["db"], "service": ["shop"]}
    web_alert = {"tier": ["web"], "service": ["shop"]}
    assert muter.mutes(db_alert, T0 + 10 * M)
    assert not muter.mutes(web_alert, T0 + 10 * M)
    assert muter.mutes(web_alert, T0 + 150 * M)
    assert not muter.mutes(db_alert, T0 + 60 * M)  # the silence has ended


def test_priority_grows_with_severity_criticality_users_and_duration() -> None:
    base = priority("warning", "medium", 10, 10)
    assert priority("critical", "medium", 10, 10) > base
    assert priority("warning", "critical", 10, 10) > base
    assert priority("warning", "medium", 1000, 10) > base
    assert priority("warning", "medium", 10, 120) > base
    assert priority("info", "low", 0, 0) == 1.0


def test_every_runbook_link_has_its_section() -> None:
    from pathlib import Path

    from tierscope.alerting.views import RUNBOOK_ANCHORS, runbook
    from tierscope.collector.tiers import TIERS

    text = (Path(__file__).parents[2] / "docs" / "runbook.md").read_text()
    headings = {line[3:].strip() for line in text.splitlines() if line.startswith("## ")}
    links = [runbook(kind, None) for kind in RUNBOOK_ANCHORS] + [runbook("baseline", t) for t in TIERS]
    assert {link.split("#")[1] for link in links} <= headings
    assert "alerts" in headings


def test_the_vectorised_quantile_of_every_group_equals_the_per_group_one() -> None:
    import numpy as np

    from tierscope.processing import histogram

    rng = np.random.default_rng(3)
    blobs, groups = [], []
    for group in (0, 1, 1, 3, 5):
        counts: histogram.Counts = {}
        for value in rng.lognormal(11, 1, int(rng.integers(1, 300))):
            histogram.add(counts, float(value))
        blobs.append(histogram.encode(counts))
        groups.append(group)
    merged = histogram.Merged(groups, blobs)
    for q in (0.5, 0.95, 0.99):
        each = merged.quantile_of_each(q)
        for group in range(6):
            (one,) = merged.quantiles(group, (q,))
            assert (np.isnan(each[group]) and one is None) or each[group] == pytest.approx(one)


def test_maintenance_windows_of_the_document_are_checked_times() -> None:
    config = parse(
        "maintenance:\n  - {starts_at: '2026-12-24T18:00:00Z', ends_at: '2026-12-26T06:00:00Z', "
        "matchers: {service: erp-web}}\n"
    )
    assert config.maintenance[0].starts_at == datetime(2026, 12, 24, 18, tzinfo=UTC)
    with pytest.raises(ConfigError, match=r"maintenance\.0\.starts_at"):
        parse("maintenance:\n  - {starts_at: 'Christmas', ends_at: '2026-12-26T06:00:00Z'}\n")
