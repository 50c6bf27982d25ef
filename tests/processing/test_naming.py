"""Business-transaction names: the default, rules from YAML, and the errors a rules file gets."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tierscope.processing.naming import (
    OTHER,
    EntrySpan,
    Naming,
    RuleError,
    Rules,
    collapse_ids,
    default_name,
)

SERVER, CONSUMER = 2, 5


def span(name: str = "request", service: str = "shop", kind: int = SERVER, **attributes: Any) -> EntrySpan:
    """An entry span; attribute keys are written with __ for dots (http__route is http.route)."""
    return EntrySpan(
        service, name, kind, {key.replace("__", "."): value for key, value in attributes.items()}
    )


ERP_RULES = """
transactions:
  - exclude: true
    path: /healthz
  - name: "ERP / Post invoice"
    service: erp-*
    method: POST
    route: "/invoices/{id}/post"
    apdex_t: 800ms
  - name: "Odoo / {attr:rpc.method}"
    method: post
    path: "/web/dataset/call_kw*"
    apdex_t: 2s
  - name: "ERP RPC / {attr:rpc.method}"
    path: /erp/rpc/
  - name: "Odoo / other call"
    path: "/web/dataset/call_kw*"
  - name: "Reports / {route}"
    route: "/reports/*"
  - name: "Order page {route}"
    route: "/orders/[id]"
  - name: "Legacy order {path}"
    path: 're:/legacy/orders/\\d+'
  - name: "Admin {attr:tenant.name}"
    attributes:
      user.role: "adm*"
      feature.beta: true
  - name: "Checkout {method}"
    path: /checkout
    apdex_t: 1200
  - name: "Order {path}"
    path: "/orders/*"
  - name: "Search {attr:search.term}"
    path: /search
  - name: "Search"
    path: /search
settings:
  apdex_t: 300
"""

PRIORITY_RULES = """
transactions:
  - name: "Invoices / posting"
    path: "/invoices/*/post"
  - name: "Invoices / any"
    path: "/invoices/*"
  - exclude: true
    path: "/invoices/*"
"""

LONG = "x" * 300
CALL_KW = {"http__request__method": "POST", "url__path": "/web/dataset/call_kw/res.partner/search_read"}

# sentence: (rules YAML or None for the default, entry span, expected BT, expected Apdex T in ms)
CASES: dict[str, tuple[str | None, EntrySpan, str | None, float]] = {
    # -- the default name --------------------------------------------------
    "A route names the transaction, with its method in upper case": (
        None,
        span(http__request__method="get", http__route="/leads/{id}", url__path="/leads/42"),
        "GET /leads/{id}",
        500,
    ),
    "The old http.method attribute is understood too": (
        None,
        span(http__method="POST", http__route="/leads"),
        "POST /leads",
        500,
    ),
    "A route without a method is named by the route alone": (None, span(http__route="/leads"), "/leads", 500),
    "A numeric id in the path is collapsed": (
        None,
        span(http__request__method="GET", url__path="/orders/42/lines/7"),
        "GET /orders/{id}/lines/{id}",
        500,
    ),
    "A UUID in the path is collapsed, whatever its case": (
        None,
        span(http__request__method="GET", url__path="/carts/550E8400-e29b-41d4-a716-446655440000"),
        "GET /carts/{uuid}",
        500,
    ),
    "A long hex hash in the path is collapsed": (
        None,
        span(http__request__method="GET", url__path="/blobs/9f86d081884c7d659a2feaa0c55ad015"),
        "GET /blobs/{hash}",
        500,
    ),
    "A document number with three or more digits is collapsed": (
        None,
        span(http__request__method="GET", url__path="/invoices/INV-2026-00042/lines/SO0042x1"),
        "GET /invoices/{id}/lines/{id}",
        500,
    ),
    "An e-mail address in the path is collapsed": (
        None,
        span(http__request__method="GET", url__path="/users/jane.doe@example.com/settings"),
        "GET /users/{email}/settings",
        500,
    ),
    "A long opaque token in the path is collapsed": (
        None,
        span(http__request__method="GET", url__path="/reset/aZ3kQ9xLmN7pR2tV5wY8bC1d"),
        "GET /reset/{token}",
        500,
    ),
    "A short version segment is not an id": (
        None,
        span(http__request__method="GET", url__path="/api/v2/users"),
        "GET /api/v2/users",
        500,
    ),
    "The query string of http.target never reaches the name": (
        None,
        span(http__method="GET", http__target="/search?q=12345&page=2"),
        "GET /search",
        500,
    ),
    "The path is read from url.full without its query": (
        None,
        span(http__request__method="POST", url__full="https://shop.example.com/carts/991/checkout?x=1"),
        "POST /carts/{id}/checkout",
        500,
    ),
    "The old http.url is read the same way": (
        None,
        span(http__method="GET", http__url="http://shop.example.com/items/123"),
        "GET /items/{id}",
        500,
    ),
    "Every call_kw call posts to one URL, so the default name is the RPC method": (
        None,
        span(rpc__method="res.partner/search_read", **CALL_KW),
        "RPC res.partner/search_read",
        500,
    ),
    "A JSON-RPC call with a service is named service/method": (
        None,
        span(
            http__request__method="POST",
            url__path="/erp/rpc/",
            rpc__service="object",
            rpc__method="execute_kw",
        ),
        "object/execute_kw",
        500,
    ),
    "Without HTTP or RPC attributes the span name is used, ids collapsed": (
        None,
        span("process order 8812", kind=CONSUMER),
        "process order {id}",
        500,
    ),
    "A span name holding a path has its ids collapsed": (None, span("GET /leads/42"), "GET /leads/{id}", 500),
    "An empty span name becomes unnamed": (None, span(""), "unnamed", 500),
    "A default name is cut to 200 characters": (
        None,
        span(http__request__method="GET", http__route="/" + LONG),
        ("GET /" + LONG)[:200],
        500,
    ),
    # -- rules -------------------------------------------------------------
    "A rule on service glob, method and exact route names the invoice posting": (
        ERP_RULES,
        span(service="erp-api", http__request__method="POST", http__route="/invoices/{id}/post"),
        "ERP / Post invoice",
        800,
    ),
    "An exact route does not match another route": (
        ERP_RULES,
        span(service="erp-api", http__request__method="POST", http__route="/invoices/{id}/cancel"),
        "POST /invoices/{id}/cancel",
        300,
    ),
    "The service glob is case-sensitive": (
        ERP_RULES,
        span(service="ERP-api", http__request__method="POST", http__route="/invoices/{id}/post"),
        "POST /invoices/{id}/post",
        300,
    ),
    "A call_kw call is named from its RPC method by a template, method matched in any case": (
        ERP_RULES,
        span(rpc__method="res.partner/search_read", **CALL_KW),
        "Odoo / res.partner/search_read",
        2000,
    ),
    "A JSON-RPC call to /erp/rpc/ is named from its RPC method": (
        ERP_RULES,
        span(http__request__method="POST", url__path="/erp/rpc/", rpc__method="execute_kw"),
        "ERP RPC / execute_kw",
        300,
    ),
    "A call_kw call without rpc.method falls through to the next rule": (
        ERP_RULES,
        span(**CALL_KW),
        "Odoo / other call",
        300,
    ),
    "A health check is excluded": (ERP_RULES, span(url__path="/healthz"), None, 300),
    "Exclusion needs the whole path to match": (ERP_RULES, span(url__path="/healthz/db"), "/healthz/db", 300),
    "A route with * is a glob": (
        ERP_RULES,
        span(http__request__method="GET", http__route="/reports/{name}/pdf"),
        "Reports / /reports/{name}/pdf",
        300,
    ),
    "A route without * or ? is exact, so its brackets are literal": (
        ERP_RULES,
        span(http__route="/orders/[id]"),
        "Order page /orders/[id]",
        300,
    ),
    "A re: path is a regular expression": (
        ERP_RULES,
        span(url__path="/legacy/orders/12"),
        "Legacy order /legacy/orders/{id}",
        300,
    ),
    "A re: path must match the whole path": (
        ERP_RULES,
        span(url__path="/legacy/orders/12/lines"),
        "/legacy/orders/{id}/lines",
        300,
    ),
    "Every attribute condition must match, booleans included": (
        ERP_RULES,
        span("admin", user__role="administrator", feature__beta=True, tenant__name="acme"),
        "Admin acme",
        300,
    ),
    "One failing attribute condition is enough to skip the rule": (
        ERP_RULES,
        span("admin", user__role="administrator", feature__beta=False, tenant__name="acme"),
        "admin",
        300,
    ),
    "A condition on a missing attribute does not match": (
        ERP_RULES,
        span("admin", feature__beta=True, tenant__name="acme"),
        "admin",
        300,
    ),
    "A missing field other than attr renders as ?": (
        ERP_RULES,
        span(url__path="/checkout"),
        "Checkout ?",
        1200,
    ),
    "Ids in a rendered name are collapsed": (
        ERP_RULES,
        span(url__path="/orders/12345"),
        "Order /orders/{id}",
        300,
    ),
    "A missing {attr:} falls through to a more general rule below": (
        ERP_RULES,
        span(url__path="/search"),
        "Search",
        300,
    ),
    "A rendered name is cut to 200 characters": (
        ERP_RULES,
        span(url__path="/search", search__term=LONG),
        ("Search " + LONG)[:200],
        300,
    ),
    "A span matching no rule gets the default name and Apdex T": (
        ERP_RULES,
        span(http__request__method="GET", http__route="/leads"),
        "GET /leads",
        300,
    ),
    "The first matching rule wins": (
        PRIORITY_RULES,
        span(url__path="/invoices/7/post"),
        "Invoices / posting",
        500,
    ),
    "A later rule applies when the earlier ones do not match": (
        PRIORITY_RULES,
        span(url__path="/invoices/7"),
        "Invoices / any",
        500,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_naming(case: str) -> None:
    rules_yaml, entry, bt, apdex_t_ms = CASES[case]
    rules = Rules.parse(rules_yaml, "case.yaml") if rules_yaml is not None else Rules.default()
    naming = rules.name(entry)
    assert (naming.bt, naming.apdex_t_ms) == (bt, apdex_t_ms)
    if rules_yaml is None:
        assert naming.rule is None
        assert default_name(entry) == bt


def test_the_matching_rule_is_reported_by_index() -> None:
    rules = Rules.parse(ERP_RULES)
    assert rules.name(span(url__path="/healthz")) == Naming(None, 300, 0)
    assert rules.name(span(**CALL_KW)).rule == 4  # rule 2 needs rpc.method, rule 4 is the fallback
    assert rules.name(span(http__route="/leads")).rule is None


def test_defaults_without_rules() -> None:
    rules = Rules.default()
    assert (rules.default_apdex_t_ms, rules.max_per_service) == (500, 500)
    assert rules.describe() == []
    assert OTHER == "_other"
    empty = Rules.parse("# nothing yet\n")
    assert empty.to_document() == rules.to_document()


def test_settings_are_read() -> None:
    rules = Rules.parse("settings:\n  apdex_t: 2s\n  max_per_service: 1000\n")
    assert (rules.default_apdex_t_ms, rules.max_per_service) == (2000, 1000)
    assert Rules.parse("settings:\n  apdex_t: '250'\n").default_apdex_t_ms == 250


def test_describe_lists_each_rule_for_the_cli() -> None:
    rows = Rules.parse(ERP_RULES).describe()
    assert rows[0] == {"index": 0, "name": "exclude", "match": "path=/healthz", "apdex_t_ms": None}
    assert rows[1] == {
        "index": 1,
        "name": "ERP / Post invoice",
        "match": "service=erp-*, method=POST, route=/invoices/{id}/post",
        "apdex_t_ms": 800,
    }
    assert rows[8]["match"] == "attr:user.role=adm*, attr:feature.beta=true"
    assert rows[3]["apdex_t_ms"] == 300  # the default


def test_documents_round_trip() -> None:
    rules = Rules.parse(ERP_RULES)
    document = rules.to_document()
    stored = json.loads(json.dumps(document))  # as a jsonb column gives it back
    again = Rules.from_document(stored)
    assert again.to_document() == document
    assert again.describe() == rules.describe()
    assert (again.default_apdex_t_ms, again.max_per_service) == (300, 500)
    for _, entry, _, _ in CASES.values():
        assert again.name(entry) == rules.name(entry)


def test_a_document_of_another_version_is_refused() -> None:
    with pytest.raises(RuleError, match="version"):
        Rules.from_document({"version": 99, "transactions": []})


# -- errors ------------------------------------------------------------------

# sentence: (YAML, line, field path, part of the message)
ERRORS: dict[str, tuple[str, int, str, str]] = {
    "An unknown key names the allowed keys": (
        "transactions:\n  - name: x\n    path: /a\n    rout: /b\n",
        4,
        "transactions[0].rout",
        "did you mean route? allowed keys: name, exclude",
    ),
    "A bad regular expression": (
        "transactions:\n  - name: x\n    path: 're:/orders/(\\d+'\n",
        3,
        "transactions[0].path",
        "invalid regular expression: missing ), unterminated subpattern",
    ),
    "A rule without a condition": (
        "transactions:\n  - name: x\n  - name: everything\n    apdex_t: 1s\n",
        2,
        "transactions[0]",
        "no condition",
    ),
    "A rule with both name and exclude": (
        "transactions:\n  - path: /a\n    name: x\n    exclude: true\n",
        2,
        "transactions[0]",
        "not both",
    ),
    "A rule with neither name nor exclude": (
        "transactions:\n  - path: /a\n",
        2,
        "transactions[0]",
        "needs a name",
    ),
    "An unknown template field": (
        "transactions:\n  - path: /a\n    name: A\n  - path: /b\n    name: 'Order {id}'\n",
        5,
        "transactions[1].name",
        "unknown template field {id}; use {method}",
    ),
    "An unparseable apdex_t": (
        "transactions:\n  - path: /a\n    name: x\n    apdex_t: fast\n",
        4,
        "transactions[0].apdex_t",
        "expected a positive duration such as 800ms or 2s",
    ),
    "A zero apdex_t": ("settings:\n  apdex_t: 0ms\n", 2, "settings.apdex_t", "positive duration"),
    "max_per_service out of range": (
        "settings:\n  max_per_service: 100001\n",
        2,
        "settings.max_per_service",
        "from 1 to 100000",
    ),
    "A YAML syntax error": (
        "transactions:\n  - name: x\n    path: /a: b\n",
        3,
        "document",
        "invalid YAML: mapping values are not allowed here",
    ),
    "An unclosed flow list is reported where it ends and where it starts": (
        "transactions:\n  - name: x\n    path: [/a\n",
        4,
        "document",
        "(while parsing a flow sequence started on line 3)",
    ),
    "A document that is not a mapping": ("- name: x\n", 1, "document", "expected a mapping"),
    "transactions that is not a list": ("transactions:\n  name: x\n", 2, "transactions", "expected a list"),
    "An empty name": ("transactions:\n  - path: /a\n    name: ''\n", 3, "transactions[0].name", "is empty"),
    "An unclosed [ in a glob": (
        "transactions:\n  - name: x\n    service: 'erp-[ab'\n",
        3,
        "transactions[0].service",
        "unclosed [",
    ),
    "A regular expression where only globs are allowed": (
        "transactions:\n  - name: x\n    route: 're:/a.*'\n",
        3,
        "transactions[0].route",
        "allowed in path and attributes only",
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_rule_errors(case: str) -> None:
    text, line, path, message = ERRORS[case]
    with pytest.raises(RuleError) as raised:
        Rules.parse(text, "rules.yaml")
    lines = str(raised.value).splitlines()
    assert any(entry.startswith(f"rules.yaml:{line}: {path}: ") and message in entry for entry in lines), (
        lines
    )


def test_every_problem_is_reported_at_once() -> None:
    text = """\
transactions:
  - name: "Order {id}"
    path: "re:(("
  - exclude: maybe
    path: /b
  - name: x
    route: /c
    colour: red
settings:
  apdex_t: -1
"""
    with pytest.raises(RuleError) as raised:
        Rules.parse(text, "tenant-7.yaml")
    assert [(p.line, p.path) for p in raised.value.problems] == [
        (2, "transactions[0].name"),
        (3, "transactions[0].path"),
        (4, "transactions[1].exclude"),
        (8, "transactions[2].colour"),
        (10, "settings.apdex_t"),
    ]
    assert str(raised.value).count("\n") == 4
    assert all(line.startswith("tenant-7.yaml:") for line in str(raised.value).splitlines())


# -- ids ---------------------------------------------------------------------


def test_template_segments_are_kept() -> None:
    assert collapse_ids("/invoices/{id}/post") == "/invoices/{id}/post"
    assert collapse_ids("GET /leads/42?debug=1") == "GET /leads/{id}"


segment = st.text(alphabet="abcxyzABC0123456789-", min_size=1, max_size=30)
separator = st.sampled_from(["/", " ", "-"])


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(separator, segment), max_size=12))
def test_collapse_ids_leaves_no_run_of_three_digits(parts: list[tuple[str, str]]) -> None:
    text = "".join(sep + seg for sep, seg in parts)
    collapsed = collapse_ids(text)
    assert not re.search(r"\d{3}", re.sub(r"\{[^{}]*\}", "", collapsed)), (text, collapsed)
