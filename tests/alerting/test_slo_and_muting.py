"""SLO burn-rate rules generated for every SLO, business criticality and cost in
the impact, silences holding notifications back, and the chat webhook."""

from __future__ import annotations

import json
from datetime import timedelta

import psycopg
import pytest

from tierscope.alerting.delivery import Backoff, deliver_due
from tierscope.alerting.evaluator import Evaluator
from tierscope.slo import definitions
from tierscope.store import Database
from tierscope.store import slo as slo_store

from .conftest import BTS, Estate, Fault, Sink
from .test_delivery import LOOPBACK
from .test_evaluator import SETTINGS, configure, minute, open_alerts

pytestmark = pytest.mark.anyio
BACKOFF = Backoff(timedelta(seconds=1), timedelta(seconds=1))

SLOS = """\
apiVersion: tierscope/v1
kind: BusinessService
metadata: {name: order-to-cash}
spec:
  criticality: critical
  transactions:
    - {service: shop, bt: POST /checkout}
---
apiVersion: tierscope/v1
kind: SLO
metadata: {name: checkout-availability}
spec: {service: shop, bt: POST /checkout, objective: availability, target: 99%}
"""


async def apply_slos(database: Database, tenant_id: int) -> None:
    found = definitions.parse(SLOS)
    async with database.connection() as conn:
        await slo_store.save(
            conn,
            tenant_id,
            [(s.metadata.name, s.model_dump(mode="json"), "test") for s in found.slos],
            [
                (s.metadata.name, s.spec.criticality, s.model_dump(mode="json"), "test")
                for s in found.services
            ],
        )


async def test_every_slo_gets_a_burn_rate_rule_that_pages_on_a_fast_burn(estate: Estate) -> None:
    configure(
        estate,
        "rules:\n  - {name: baseline-errors, kind: baseline, metric: error_rate, min_requests: 100000}\n"
        "cost_per_user_minute: {order-to-cash: 0.5}\n",
    )
    # Every checkout request fails from minute 5: burn rate 100 against a 99 % target. The 6-hour
    # window (which holds the 70 minutes written) reaches 6 once 5 minutes failed, 5/70 = 7.1 %:
    # minute 10; the 1-hour window reaches 14.4 at minute 14 (9 of 60 minutes).
    estate.faults.append(Fault("db", "UPDATE orders", 1, minute(5), bts=(BTS[0],), errors=1.0))
    estate.write_minutes(minute(-60), 80)
    estate.write_traces(minute(5), 16, users=3)
    async with Database(estate.dsn) as database:
        await apply_slos(database, estate.tenant_id)
        evaluator = Evaluator(database, SETTINGS)
        for n in range(1, 20):
            await evaluator.cycle(minute(n))
    (alert,) = open_alerts(estate)
    assert alert["rule"] == "slo-burn:checkout-availability"
    assert alert["pending_since"] == minute(10)
    assert alert["started_at"] == minute(12)
    assert alert["severity"] == "critical"
    assert alert["service"] == "shop"
    assert alert["title"].startswith("SLO checkout-availability burning")
    assert (alert["tier"], alert["component"]) == ("db", "UPDATE orders")
    signal = alert["evidence"]["signals"][0]
    assert signal["factor"] == 14.4
    assert signal["burn_rate_short"] == pytest.approx(100.0)
    assert alert["impact"]["criticality"] == "critical"
    assert alert["impact"]["business_services"] == ["order-to-cash"]
    assert alert["impact"]["users"] == 3
    # 3 users in each of the 7 minutes from firing (12) to the last evaluation (19), at 0.5 each
    assert alert["impact"]["user_minutes"] == 21
    assert alert["impact"]["cost"] == pytest.approx(10.5)


async def test_a_silence_holds_the_notification_back_until_it_ends(estate: Estate, sink: Sink) -> None:
    configure(
        estate, f"receivers:\n  - name: chat\n    chat: {{url: '{sink.url}'}}\nroutes:\n  - receiver: chat\n"
    )
    estate.faults.append(Fault("db", "UPDATE orders", 900, minute(5)))
    estate.write_minutes(minute(-60), 80)
    with psycopg.connect(estate.dsn) as conn:
        conn.execute(
            "INSERT INTO silences (tenant_id, kind, matchers, starts_at, ends_at) "
            "VALUES (%s, 'silence', %s, %s, %s)",
            (estate.tenant_id, json.dumps({"tier": "db"}), minute(0), minute(12)),
        )
    async with Database(estate.dsn) as database:
        evaluator = Evaluator(database, SETTINGS)
        for n in range(1, 12):
            await evaluator.cycle(minute(n))
            await deliver_due(database, minute(n), BACKOFF, LOOPBACK)
        assert open_alerts(estate)[0]["state"] == "firing"
        assert sink.requests == []
        await evaluator.cycle(minute(12))
        await deliver_due(database, minute(12), BACKOFF, LOOPBACK)
    ((_, body),) = sink.requests
    message = json.loads(body)
    assert message["text"].startswith("[FIRING:critical] shop / ")
    fields = {f["title"]: f["value"] for f in message["attachments"][0]["fields"]}
    assert fields["Tier"] == "db"
    assert fields["Component"] == "UPDATE orders"
