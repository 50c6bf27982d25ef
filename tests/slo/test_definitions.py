"""SLO files: what is accepted, and the precise message a bad one gets."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest

from tierscope.slo import definitions
from tierscope.slo.definitions import DefinitionError

GOOD = """\
apiVersion: tierscope/v1
kind: BusinessService
metadata: {name: order-to-cash, displayName: Order to cash}
spec:
  criticality: critical
  transactions:
    - {service: erp-web, bt: ERP / Post invoice}
    - {service: erp-web, bt: ERP / Create order}
---
apiVersion: tierscope/v1
kind: SLO
metadata:
  name: post-invoice-latency
  displayName: Post invoice under 2 s
spec:
  service: erp-web
  bt: ERP / Post invoice
  objective: latency
  threshold: 2s
  target: 95%
  timeWindow: {duration: 1M, isRolling: false, calendar: {timeZone: Europe/Berlin}}
---
apiVersion: openslo/v1
kind: SLO
metadata: {name: order-to-cash-availability}
spec:
  businessService: order-to-cash
  objective: availability
  target: 0.999
"""


def test_a_good_file_gives_its_slos_and_services() -> None:
    found = definitions.parse(GOOD, "slos.yaml")
    assert [s.metadata.name for s in found.slos] == ["post-invoice-latency", "order-to-cash-availability"]
    latency, availability = found.slos
    assert latency.spec.target == 0.95
    assert definitions.threshold_us(latency.spec) == 2_000_000
    assert latency.spec.timeWindow.describe() == {
        "kind": "calendar",
        "duration": "1M",
        "time_zone": "Europe/Berlin",
    }
    assert availability.spec.timeWindow.describe() == {"kind": "rolling", "duration": "28d"}  # the default
    assert found.services[0].spec.criticality == "critical"


def test_a_bad_slo_file_gets_every_problem_with_file_line_and_field() -> None:
    text = dedent(
        """\
        apiVersion: tierscope/v1
        kind: SLO
        metadata:
          name: Post Invoice
        spec:
          service: erp-web
          bt: ERP / Post invoice
          objective: latancy
          treshold: 2s
          target: 99.9
          timeWindow: {duration: 2M, isRolling: false}
        """
    )
    with pytest.raises(DefinitionError) as caught:
        definitions.parse(text, "slos/erp.yaml")
    assert str(caught.value).splitlines() == [
        "slos/erp.yaml:4: metadata.name: use lower-case letters, digits, '-', '_' or '.', "
        "from a letter or digit",
        "slos/erp.yaml:8: spec.objective: Input should be 'latency', 'availability' or 'apdex'",
        "slos/erp.yaml:9: spec.treshold: unknown field; check its spelling (fields are case-sensitive)",
        "slos/erp.yaml:10: spec.target: expected a ratio from 0 to 1 (0.999) or a percentage (99.9%); "
        "got 99.9",
        "slos/erp.yaml:11: spec.timeWindow.duration: a calendar window is 1M (a month) or 1w (a week, "
        "from Monday)",
    ]


PROBLEMS = {
    "a latency objective without a threshold": (
        "spec: {service: a, bt: b, objective: latency, target: 0.9}",
        "x.yaml:4: spec: a latency objective needs a threshold (e.g. 2s); the others take none",
    ),
    "neither a transaction nor a business service": (
        "spec: {objective: availability, target: 0.9}",
        "x.yaml:4: spec: give service and bt (one business transaction) or businessService",
    ),
    "an unknown time zone": (
        "spec: {service: a, bt: b, objective: apdex, target: 0.9, timeWindow: "
        "{duration: 1w, isRolling: false, calendar: {timeZone: Europe/Bonn}}}",
        "x.yaml:4: spec.timeWindow.calendar.timeZone: unknown time zone 'Europe/Bonn'; "
        "use an IANA name such as Europe/Berlin",
    ),
    "a rolling window longer than the hour rollups are kept": (
        "spec: {service: a, bt: b, objective: apdex, target: 0.9, timeWindow: {duration: 120d}}",
        "x.yaml:4: spec.timeWindow.duration: a rolling window is from 1h to 90d long",
    ),
    "a threshold that is not a duration": (
        "spec: {service: a, bt: b, objective: latency, threshold: fast, target: 0.9}",
        "x.yaml:4: spec.threshold: expected a duration such as 500ms, 15s, 2m, 6h or 7d",
    ),
    "a missing target": (
        "spec: {service: a, bt: b, objective: availability}",
        "x.yaml:4: spec.target: is required",
    ),
}


@pytest.mark.parametrize(("spec", "message"), PROBLEMS.values(), ids=PROBLEMS.keys())
def test_precise_messages(spec: str, message: str) -> None:
    text = f"apiVersion: tierscope/v1\nkind: SLO\nmetadata: {{name: x}}\n{spec}\n"
    with pytest.raises(DefinitionError) as caught:
        definitions.parse(text, "x.yaml")
    assert str(caught.value) == message


def test_invalid_yaml_names_its_line() -> None:
    with pytest.raises(DefinitionError) as caught:
        definitions.parse("apiVersion: tierscope/v1\nkind: SLO\nmetadata: {name: [x}\n", "x.yaml")
    assert str(caught.value).startswith("x.yaml:3: document: invalid YAML: ")


def test_an_unknown_kind_and_a_duplicate_name() -> None:
    text = GOOD + "---\n" + GOOD.split("---\n")[1] + "---\nkind: Dashboard\n"
    with pytest.raises(DefinitionError) as caught:
        definitions.parse(text, "x.yaml")
    assert str(caught.value).splitlines() == [
        "x.yaml:34: metadata.name: SLO 'post-invoice-latency' is defined twice",
        "x.yaml:44: kind: expected SLO, BusinessService, BusinessCalendar",
    ]


def test_a_directory_is_one_set_and_a_missing_business_service_is_named_where_it_is_used(
    tmp_path: Path,
) -> None:
    services, slos = GOOD.split("---\n", 1)
    (tmp_path / "a-services.yaml").write_text(services)
    (tmp_path / "b-slos.yml").write_text(slos)
    (tmp_path / "notes.txt").write_text("not YAML: ignored")
    found = definitions.load(tmp_path)
    assert len(found.slos) == 2
    assert len(found.services) == 1
    (tmp_path / "a-services.yaml").unlink()
    with pytest.raises(DefinitionError) as caught:
        definitions.load(tmp_path)
    assert str(caught.value) == (
        f"{tmp_path / 'b-slos.yml'}:18: spec.businessService: "
        "no business service named 'order-to-cash' in these files or already applied"
    )
    assert definitions.load(tmp_path, known_services=["order-to-cash"]).slos


def test_an_empty_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError) as caught:
        definitions.load(tmp_path)
    assert str(caught.value) == f"{tmp_path}:1: document: no *.yaml or *.yml file in this directory"


def test_a_business_calendar_is_one_per_tenant_and_checked() -> None:
    calendar = (
        "apiVersion: tierscope/v1\nkind: BusinessCalendar\nmetadata: {name: germany}\nspec:\n"
        "  timeZone: Europe/Berlin\n  country: DE\n  subdivision: BY\n  monthEndDays: 3\n"
        "  blackoutDays: [2026-12-24, 2026-12-31]\n"
    )
    found = definitions.parse(calendar, "c.yaml")
    assert found.calendar is not None
    business = found.calendar.spec.calendar()
    assert (business.time_zone, business.country, business.subdivision, business.month_end_days) == (
        "Europe/Berlin",
        "DE",
        "BY",
        3,
    )
    assert len(business.blackout) == 2
    with pytest.raises(DefinitionError) as caught:
        definitions.parse(calendar + "---\n" + calendar.replace("country: DE", "country: XX"), "c.yaml")
    assert str(caught.value).splitlines() == [
        "c.yaml:16: spec.country: 'XX' is not a country code the holidays package knows",
    ]
    with pytest.raises(DefinitionError) as caught:
        definitions.parse(calendar + "---\n" + calendar, "c.yaml")
    assert str(caught.value) == "c.yaml:12: kind: a tenant has one BusinessCalendar; this is a second one"


def test_openslo_shapes_are_accepted() -> None:
    text = dedent(
        """\
        apiVersion: openslo/v1
        kind: SLO
        metadata: {name: post-invoice}
        spec:
          service: erp-web
          bt: ERP / Post invoice
          objective: availability
          target: 0.995
          budgetingMethod: Occurrences
          timeWindow:
            - duration: 1M
              isRolling: false
              calendar: {startTime: 2026-01-01 00:00:00, timeZone: Europe/Berlin}
        """
    )
    (slo,) = definitions.parse(text, "o.yaml").slos
    assert slo.spec.timeWindow.describe() == {
        "kind": "calendar",
        "duration": "1M",
        "time_zone": "Europe/Berlin",
    }
    with pytest.raises(DefinitionError) as caught:
        definitions.parse(text.replace("2026-01-01 00:00:00", "2026-01-15 08:00:00"), "o.yaml")
    assert str(caught.value).startswith(
        "o.yaml:13: spec.timeWindow.calendar: startTime must be local midnight"
    )
    with pytest.raises(DefinitionError) as caught:
        definitions.parse(text.replace("Occurrences", "Timeslices"), "o.yaml")
    assert str(caught.value) == "o.yaml:9: spec.budgetingMethod: Input should be 'Occurrences'"
