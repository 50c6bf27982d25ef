"""Tenant isolation over every endpoint (RELIABILITY.md T-13, broken object level
authorization): acme's tokens, given globex's ids, find nothing of globex's.

The endpoints come from the app's router (tierscope.testing.routes), so an
endpoint added later is swapped over too; a path parameter this file does not
know fails :func:`test_every_id_parameter_has_ids_to_swap` until it is taught
where to find the other tenant's ids of that kind.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tierscope.testing.figures import Tally, tally
from tierscope.testing.routes import collector_app, endpoints

from .conftest import Estate

# Path parameter -> which of the other tenant's ids to put in it.
ID_KINDS = {
    "trace_id": "trace",
    "alert_id": "alert",
    "silence_id": "silence",
    "slo_id": "slo",
    "experience_id": "experience",
    "key_id": "key",
}
ROUTES = endpoints(collector_app())
WITH_IDS = [e for e in ROUTES if e.params]
# Reads of the API and the console that take no id: swapped through their query parameters.
LISTINGS = [
    e
    for e in ROUTES
    if e.method == "GET"
    and not e.params
    and (e.path.startswith("/api/v1/") or e.module.startswith("tierscope.dashboards"))
    and not e.path.endswith("openapi.json")
]
BODIES: dict[str, Any] = {
    "PUT /api/v1/silences/{silence_id}": {"matchers": {"service": "x"}, "duration": "1h", "comment": "taken"},
    "POST /api/v1/alerts/{alert_id}/ack": {"by": "intruder"},
}
SETTINGS = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def t13() -> Tally:
    return tally("T-13").describe(
        "tenant A's viewer, editor and admin tokens with B's trace, alert, silence, SLO, experience and "
        "key ids in every routed path (Hypothesis picks endpoint, role, ids); B's service, transaction "
        "and SLO names in every listing's query; X-Scope-OrgID / X-Tenant / X-Tenant-Id naming B",
        "every swapped id is 404 like a missing one (403 first when the role may not write at all); no "
        "answer contains any text B stored; B's silence, alert and keys unchanged; the headers change "
        "nothing",
    ).note(endpoints_with_ids=len(WITH_IDS), listings=len(LISTINGS))


def test_every_id_parameter_has_ids_to_swap() -> None:
    unknown = {f"{e} ({e.module})": p for e in WITH_IDS for p in e.params if p not in ID_KINDS}
    assert not unknown, f"teach ID_KINDS (and conftest._seed) about these path parameters: {unknown}"
    assert len(WITH_IDS) >= 9, [str(e) for e in WITH_IDS]


def test_each_tenant_reads_its_own_objects_so_the_swaps_are_not_vacuous(estate: Estate) -> None:
    for tenant in estate.tenants.values():
        for endpoint in WITH_IDS:
            if endpoint.method != "GET":
                continue
            values = {p: tenant.ids[ID_KINDS[p]][0] for p in endpoint.params}
            response = estate.call("GET", endpoint.url(values), tenant.tokens["admin"])
            assert response.status_code == 200, (str(endpoint), response.status_code, response.text[:300])
            if endpoint.params != ["key_id"]:
                assert tenant.secret in response.text, f"{endpoint} shows {tenant.name}'s object"


def _leaks(estate: Estate, response_text: str, caller: str) -> list[str]:
    return [t.secret for name, t in estate.tenants.items() if name != caller and t.secret in response_text]


@SETTINGS
@given(data=st.data())
def test_another_tenants_ids_are_not_found_on_any_endpoint(estate: Estate, data: st.DataObject) -> None:
    endpoint = data.draw(st.sampled_from(WITH_IDS), label="endpoint")
    caller, owner = data.draw(st.sampled_from([("acme", "globex"), ("globex", "acme")]), label="who")
    role = data.draw(st.sampled_from(["viewer", "editor", "admin"]), label="role")
    values = {p: data.draw(st.sampled_from(estate.tenants[owner].ids[ID_KINDS[p]])) for p in endpoint.params}
    response = estate.call(
        endpoint.method,
        endpoint.url(values),
        estate.tenants[caller].tokens[role],
        body=BODIES.get(str(endpoint)),
    )
    assert not _leaks(estate, response.text, caller), (str(endpoint), response.text[:500])
    # Not found, exactly like an id that does not exist; or refused before
    # looking, when the role may not do this at all.
    allowed = {404, 403} if role != "admin" and endpoint.method != "GET" else {404}
    assert response.status_code in allowed, (str(endpoint), role, response.status_code, response.text[:300])
    t13().count(swapped_id_requests=1, leaks=0).count_in("answers", response.status_code)


@SETTINGS
@given(data=st.data())
def test_another_tenants_names_in_query_parameters_reveal_nothing(
    estate: Estate, data: st.DataObject
) -> None:
    endpoint = data.draw(st.sampled_from(LISTINGS), label="endpoint")
    caller, owner = data.draw(st.sampled_from([("acme", "globex"), ("globex", "acme")]), label="who")
    theirs = estate.tenants[owner].queries
    names = data.draw(st.lists(st.sampled_from(sorted(theirs)), max_size=3, unique=True), label="params")
    params = {name: data.draw(st.sampled_from(theirs[name])) for name in names}
    if data.draw(st.booleans(), label="wide window"):
        params["since"] = "2d"
    role = data.draw(st.sampled_from(["viewer", "admin"]), label="role")
    response = estate.call("GET", endpoint.path, estate.tenants[caller].tokens[role], params=params)
    assert response.status_code < 500, (str(endpoint), params, response.text[:300])
    assert not _leaks(estate, response.text, caller), (str(endpoint), params, response.text[:500])
    t13().count(swapped_name_requests=1, leaks=0)


def test_the_swaps_changed_nothing_of_the_owner(estate: Estate) -> None:
    """After every write with the wrong tenant's ids, each owner still has its
    silence unchanged, its alert unacknowledged and its keys live."""
    for tenant in estate.tenants.values():
        token = tenant.tokens["admin"]
        silence = estate.call("GET", f"/api/v1/silences/{tenant.ids['silence'][0]}", token).json()
        assert silence["comment"] == tenant.secret
        alert = estate.call("GET", f"/api/v1/alerts/{tenant.ids['alert'][0]}", token).json()
        assert alert["state"] == "firing"
        assert not alert["acknowledged_by"]
        keys = estate.call("GET", "/api/v1/keys", token).json()["keys"]
        assert all(key["live"] for key in keys), keys
    t13().note(owners_unchanged=f"{len(estate.tenants)}/{len(estate.tenants)}")


@pytest.mark.parametrize("header", ["X-Scope-OrgID", "X-Tenant", "X-Tenant-Id"])
def test_a_tenant_header_does_not_change_whose_data_is_read(estate: Estate, header: str) -> None:
    acme, globex = estate.tenants["acme"], estate.tenants["globex"]
    for path in ("/api/v1/alerts", "/api/v1/silences", "/api/v1/experiences", "/api/v1/traces"):
        for value in (globex.name, str(globex.tenant_id)):
            forged = httpx.get(
                estate.collector.url + path,
                headers={"Authorization": f"Bearer {acme.tokens['viewer']}", header: value},
                params={"since": "2d"},
                timeout=20,
            )
            assert forged.status_code == 200, (path, forged.text[:300])
            assert globex.secret not in forged.text, path
            assert acme.secret in forged.text, f"{path} answers for acme, the token's tenant"
            t13().count(forged_header_requests=1, leaks=0)
