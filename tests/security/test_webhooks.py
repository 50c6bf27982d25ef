"""Webhook receivers as an attack surface: SSRF through the real API and the real
resolver (RELIABILITY.md T-20), and signatures against replay, skew and
tampering, for any body and secret (T-21).

tests/alerting/test_delivery.py covers the address rules with a stub resolver
and the check at send time; here a name that the machine's own resolver maps
to loopback is refused when an editor saves it.
"""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tierscope.alerting.notifiers.webhook import TOLERANCE_SECONDS, signature, verify
from tierscope.testing.collector import CollectorProcess
from tierscope.testing.figures import Tally, tally

RULES = """
defaults: false
rules:
  - name: checkout-sla
    kind: threshold
    service: shop
    bt: POST /checkout
    above: 500
    window: 1m
receivers:
  - name: ops
    webhook: {{url: "{url}", secret: s3cret}}
routes:
  - receiver: ops
"""


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:5432/",  # a name the real resolver maps to loopback
        "http://localhost./hook",  # the same name, fully qualified
        "http://127.1/hook",  # loopback in a short form
        "http://0.0.0.0:4318/hook",
        "http://[::1]:4318/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:10.0.0.1]/hook",
    ],
)
def test_saving_a_receiver_that_reaches_inside_is_refused(collector: CollectorProcess, url: str) -> None:
    token = collector.credentials()["api_token"]
    response = httpx.put(
        f"{collector.url}/api/v1/alerting/config",
        content=RULES.format(url=url).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/yaml"},
        timeout=20,
    )
    assert response.status_code == 422, response.text
    assert "ops" in response.json()["detail"] or "receiver" in response.json()["detail"]
    saved = httpx.get(
        f"{collector.url}/api/v1/alerting/config", headers={"Authorization": f"Bearer {token}"}, timeout=20
    ).json()
    assert url not in str(saved), "nothing of the refused document was stored"
    tally("T-20").count(refused_through_the_api=1)


def t21() -> Tally:
    return tally("T-21").describe(
        "any body and secret (Hypothesis): replays and clock skew past 5 min either way, one changed "
        "body byte, a moved timestamp, a flipped signature digit, another secret",
        "HMAC-SHA256 over timestamp.body verified; every change and every skew past 300 s refused; "
        "everything within 300 s accepted",
    )


_SECRETS = st.text(min_size=1, max_size=64)
_BODIES = st.binary(max_size=4096)
_STAMPS = st.integers(min_value=1_000_000_000, max_value=4_000_000_000)


@settings(max_examples=300, deadline=None)
@given(secret=_SECRETS, body=_BODIES, stamp=_STAMPS, drift=st.integers(-TOLERANCE_SECONDS, TOLERANCE_SECONDS))
def test_a_signature_holds_within_the_tolerance(secret: str, body: bytes, stamp: int, drift: int) -> None:
    assert verify(secret, str(stamp), body, signature(secret, str(stamp), body), now=stamp + drift)
    t21().count(cases=1, wrong_verdicts=0).count_in("kinds", "accepted (skew ≤ 300 s)")


@settings(max_examples=300, deadline=None)
@given(
    secret=_SECRETS,
    body=_BODIES,
    stamp=_STAMPS,
    skew=st.integers(TOLERANCE_SECONDS + 1, 10**7),
    sign=st.sampled_from([-1, 1]),
)
def test_a_replay_or_a_clock_skew_past_five_minutes_is_refused(
    secret: str, body: bytes, stamp: int, skew: int, sign: int
) -> None:
    signed = signature(secret, str(stamp), body)
    assert not verify(secret, str(stamp), body, signed, now=stamp + sign * skew)
    t21().count(cases=1, wrong_verdicts=0).count_in("kinds", "refused (skew > 300 s)")


@settings(max_examples=300, deadline=None)
@given(secret=_SECRETS, body=_BODIES, stamp=_STAMPS, data=st.data())
def test_any_change_to_the_body_the_timestamp_or_the_signature_is_refused(
    secret: str, body: bytes, stamp: int, data: st.DataObject
) -> None:
    signed = signature(secret, str(stamp), body)
    what = data.draw(st.sampled_from(["body", "stamp", "signature", "secret"]))
    if what == "body":
        changed = data.draw(_BODIES.filter(lambda b: b != body))
        assert not verify(secret, str(stamp), changed, signed, now=stamp)
    elif what == "stamp":
        # Moving the timestamp within the window does not carry the signature along.
        other = stamp + data.draw(st.integers(-TOLERANCE_SECONDS, TOLERANCE_SECONDS).filter(bool))
        assert not verify(secret, str(other), body, signed, now=stamp)
    elif what == "signature":
        position = data.draw(st.integers(len("sha256="), len(signed) - 1))
        flipped = "0" if signed[position] != "0" else "1"
        assert not verify(
            secret, str(stamp), body, signed[:position] + flipped + signed[position + 1 :], now=stamp
        )
    else:
        other_secret = data.draw(_SECRETS.filter(lambda s: s != secret))
        assert not verify(other_secret, str(stamp), body, signed, now=stamp)
    t21().count(cases=1, wrong_verdicts=0).count_in("kinds", f"refused (other {what})")
