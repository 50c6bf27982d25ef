"""Delivery: at least once through a receiver that is down and then up, again
when the severity rises, signed webhooks, and SSRF checks at save and at send
time."""

from __future__ import annotations

import ipaddress
from datetime import timedelta

import psycopg
import pytest

from tierscope.alerting.delivery import Backoff, deliver_due
from tierscope.alerting.evaluator import Evaluator
from tierscope.alerting.notifiers.webhook import signature, verify
from tierscope.alerting.ssrf import UnsafeAddress, check_url
from tierscope.store import Database
from tierscope.testing.figures import Tally, tally

from .conftest import Estate, Fault, Sink
from .test_evaluator import CHECKOUT, SETTINGS, configure, minute, webhook_config

pytestmark = pytest.mark.anyio
LOOPBACK = [ipaddress.ip_network("127.0.0.1/32")]


def t20() -> Tally:
    return tally("T-20").describe(
        "receivers at 127.0.0.1:5432, [::1], 169.254.169.254, 10.0.0.1, IPv4-mapped addresses, names "
        "resolving to loopback (a stub resolver, and localhost through the machine's real resolver, "
        "saved through the API)",
        "refused when saved (422 naming the receiver, nothing stored) and again at send time with the "
        "resolved address checked; loopback allowed only when the operator allow-lists it",
    )


async def test_a_receiver_down_then_up_gets_the_alert_at_least_once_and_the_resolve_later(
    estate: Estate, sink: Sink
) -> None:
    configure(estate, webhook_config(sink))
    sink.stop()  # down: connections are refused
    estate.faults.append(Fault("db", "UPDATE orders", 900, minute(5), minute(12)))
    estate.write_minutes(minute(-60), 80)
    backoff = Backoff(timedelta(seconds=10), timedelta(seconds=40))
    async with Database(estate.dsn) as database:
        evaluator = Evaluator(database, SETTINGS)
        for n in range(1, 10):
            await evaluator.cycle(minute(n))
            assert await deliver_due(database, minute(n), backoff, LOOPBACK) == 0
        with psycopg.connect(estate.dsn) as conn:
            attempts, error = conn.execute("SELECT attempts, last_error FROM notifications").fetchone()
        assert attempts >= 2
        assert "ConnectError" in error
        sink.start()  # back, but answering 503 at first
        sink.status = 503
        assert await deliver_due(database, minute(10), backoff, LOOPBACK) == 0
        sink.status = 200
        assert (
            await deliver_due(database, minute(10) + timedelta(seconds=5), backoff, LOOPBACK) == 0
        )  # backing off
        assert await deliver_due(database, minute(11), backoff, LOOPBACK) == 1
        assert [event for event, _ in sink.events()] == ["firing"]
        for n in range(12, 22):
            await evaluator.cycle(minute(n))
            await deliver_due(database, minute(n), backoff, LOOPBACK)
    assert [event for event, _ in sink.events()] == ["firing", "resolved"]
    firing, resolved = sink.events()
    assert firing[1]["id"] == resolved[1]["id"]
    assert firing[1]["group_key"] == resolved[1]["group_key"] == "cause:db:UPDATE orders"
    # The last slow minute (10:11) stays in the 5-minute window until 10:16; then keep_firing_for 5m.
    assert resolved[1]["resolved_at"] == "2026-11-23T10:21:00Z"
    events = [event for event, _ in sink.events()]
    tally("T-18").describe(
        "the webhook receiver refuses connections, then answers 503, while an alert fires",
        "retries with backoff (attempts recorded with their error); the alert arrives after recovery; "
        "the resolve comes later under the same id and group key",
    ).note(
        attempts_while_down=attempts,
        answered_503=1,
        firing_received=events.count("firing"),
        resolved_received=events.count("resolved"),
        duplicates=len(events) - len(set(events)),
    )


async def test_a_severity_rise_while_firing_notifies_again_and_a_fall_does_not(
    estate: Estate, sink: Sink
) -> None:
    configure(
        estate,
        f"""
defaults: false
rules:
  - {{name: slow, kind: threshold, service: shop, bt: POST /checkout, above: 500, severity: warning,
      window: 1m, min_requests: 1, for: 0s, keep_firing_for: 10m}}
  - {{name: very-slow, kind: threshold, service: shop, bt: POST /checkout, above: 1500,
      severity: critical, window: 1m, min_requests: 1, for: 0s, keep_firing_for: 10m}}
receivers: [{{name: ops, webhook: {{url: "{sink.url}"}}}}]
routes: [{{receiver: ops}}]
""",
    )
    # 900 ms more from minute 5 (warning), 2.4 s from minute 10 (critical), 900 ms again from 15.
    estate.faults += [
        Fault("db", "UPDATE orders", 900, minute(5), bts=(CHECKOUT,)),
        Fault("db", "UPDATE orders", 1500, minute(10), minute(15), bts=(CHECKOUT,)),
    ]
    estate.write_minutes(minute(-60), 80)
    backoff = Backoff(timedelta(seconds=1), timedelta(seconds=1))
    async with Database(estate.dsn) as database:
        evaluator = Evaluator(database, SETTINGS)
        for n in range(1, 20):
            await evaluator.cycle(minute(n))
            await deliver_due(database, minute(n), backoff, LOOPBACK)
    events = sink.events()
    assert [(event, alert["severity"]) for event, alert in events] == [
        ("firing", "warning"),
        ("firing", "critical"),
    ]
    assert events[0][1]["id"] == events[1][1]["id"]  # one incident, told again because it got worse
    with psycopg.connect(estate.dsn) as conn:
        (severity,) = conn.execute("SELECT severity FROM alerts").fetchone()
    assert severity == "warning"  # it fell back, and that was not paged


async def test_webhooks_are_signed_over_timestamp_and_body(estate: Estate, sink: Sink) -> None:
    configure(estate, webhook_config(sink))
    estate.faults.append(Fault("db", "UPDATE orders", 900, minute(5)))
    estate.write_minutes(minute(-60), 70)
    async with Database(estate.dsn) as database:
        evaluator = Evaluator(database, SETTINGS)
        for n in range(1, 10):
            await evaluator.cycle(minute(n))
        await deliver_due(database, minute(10), Backoff(timedelta(seconds=1), timedelta(seconds=1)), LOOPBACK)
    ((headers, body),) = sink.requests
    stamp, signed = headers["x-tierscope-timestamp"], headers["x-tierscope-signature"]
    assert signed == signature("s3cret", stamp, body)
    assert verify("s3cret", stamp, body, signed)
    assert not verify("s3cret", stamp, body + b" ", signed)  # tampered
    assert not verify("other", stamp, body, signed)  # wrong key
    assert not verify("s3cret", stamp, body, signed, now=int(stamp) + 301)  # replayed too late
    tally("T-21").count(real_webhooks_verified=1, wrong_verdicts=0)


def resolver_to(*addresses: str):
    return lambda host, port: list(addresses)


@pytest.mark.parametrize(
    ("url", "resolved", "allowed"),
    [
        pytest.param(
            "http://127.0.0.1:5432/", ["127.0.0.1"], [], id="the store's port on loopback is refused"
        ),
        pytest.param("http://[::1]/hook", ["::1"], [], id="IPv6 loopback is refused"),
        pytest.param(
            "http://169.254.169.254/latest", ["169.254.169.254"], [], id="cloud metadata is refused"
        ),
        pytest.param("http://10.0.0.1/hook", ["10.0.0.1"], [], id="a private address is refused"),
        pytest.param(
            "http://hooks.example/x", ["127.0.0.2"], [], id="a name resolving to loopback is refused"
        ),
        pytest.param(
            "http://mixed.example/x", ["203.0.113.9", "192.168.1.4"], [], id="one private address is enough"
        ),
        pytest.param(
            "http://[::ffff:127.0.0.1]/", ["::ffff:127.0.0.1"], [], id="IPv4-mapped loopback is refused"
        ),
        pytest.param("ftp://hooks.example/x", ["8.8.8.8"], [], id="a scheme other than http(s) is refused"),
        pytest.param(
            "http://127.0.0.1:9/", ["127.0.0.1"], ["127.0.0.2/32"], id="another allowed address does not help"
        ),
    ],
)
def test_unsafe_receiver_addresses_are_refused(url: str, resolved: list[str], allowed: list[str]) -> None:
    with pytest.raises(UnsafeAddress):
        check_url(url, [ipaddress.ip_network(a) for a in allowed], resolver_to(*resolved))
    t20().count(refused_by_the_resolver_check=1)


@pytest.mark.parametrize(
    ("url", "resolved", "allowed"),
    [
        pytest.param("https://hooks.example/x", ["93.184.216.34"], [], id="a public address is accepted"),
        pytest.param(
            "http://127.0.0.1:8080/",
            ["127.0.0.1"],
            ["127.0.0.1/32"],
            id="an allow-listed loopback is accepted",
        ),
    ],
)
def test_safe_or_allow_listed_addresses_are_accepted(
    url: str, resolved: list[str], allowed: list[str]
) -> None:
    check_url(url, [ipaddress.ip_network(a) for a in allowed], resolver_to(*resolved))
    t20().count(public_or_allow_listed_accepted=1)


async def test_a_receiver_is_checked_again_at_send_time(estate: Estate, sink: Sink) -> None:
    """Saved while loopback was allowed; the operator then removed it from the allow-list."""
    configure(estate, webhook_config(sink))
    estate.faults.append(Fault("db", "UPDATE orders", 900, minute(5)))
    estate.write_minutes(minute(-60), 70)
    async with Database(estate.dsn) as database:
        evaluator = Evaluator(database, SETTINGS)
        for n in range(1, 10):
            await evaluator.cycle(minute(n))
        backoff = Backoff(timedelta(seconds=1), timedelta(seconds=1))
        assert await deliver_due(database, minute(10), backoff, []) == 0
    assert sink.requests == []
    with psycopg.connect(estate.dsn) as conn:
        (error,) = conn.execute("SELECT last_error FROM notifications").fetchone()
    assert "loopback" in error
    t20().count(refused_at_send_time=1)
