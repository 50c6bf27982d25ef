"""The watchdog: beats to a real receiver while data flows and the evaluation
succeeds, none once the pipeline is silent or the evaluation fails."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tierscope.alerting.evaluator import Evaluator
from tierscope.alerting.heartbeat import WATCHDOG, Heartbeats
from tierscope.alerting.rules import ConfigError, parse
from tierscope.store import Database

from .conftest import Estate, Sink
from .test_delivery import LOOPBACK
from .test_evaluator import SETTINGS, configure, minute

pytestmark = pytest.mark.anyio


def heartbeat_config(sink: Sink) -> str:
    return f"""
receivers: [{{name: deadman, webhook: {{url: "{sink.url}"}}}}]
heartbeat: {{receiver: deadman, every: 1m, max_silence: 5m}}
"""


async def test_beats_while_data_flows_and_stop_when_the_pipeline_goes_silent(
    estate: Estate, sink: Sink
) -> None:
    configure(estate, heartbeat_config(sink))
    estate.write_minutes(minute(-60), 70)  # data up to 10:10
    async with Database(estate.dsn) as database:
        evaluator = Evaluator(database, SETTINGS)
        heartbeats = Heartbeats(database, LOOPBACK, "docs/runbook.md")
        beats = []
        for seconds in range(60, 20 * 60, 30):  # every 30 s from 10:01 to 10:20
            now = minute(0) + timedelta(seconds=seconds)
            report = await evaluator.cycle(now)
            beats.append((seconds, await heartbeats.beat(report.evaluated, now)))
    sent = [seconds for seconds, count in beats if count]
    # Once a minute while the newest data (10:10) is under 5 minutes old, then silence.
    assert sent == list(range(60, 15 * 60 + 1, 60)), sent
    assert len(sink.events()) == len(sent)
    event, beat = sink.events()[-1]
    assert event == "heartbeat"
    assert beat["rule"] == WATCHDOG
    assert beat["latest_data_at"] == "2026-11-23T10:10:00Z"  # the end of the last minute written
    assert beat["runbook"].endswith("#watchdog")


async def test_a_failing_evaluation_does_not_beat(estate: Estate, sink: Sink) -> None:
    configure(estate, heartbeat_config(sink))
    estate.write_minutes(minute(-60), 70)
    async with Database(estate.dsn) as database:
        evaluator = Evaluator(database, SETTINGS)
        heartbeats = Heartbeats(database, LOOPBACK, "docs/runbook.md")
        report = await evaluator.cycle(minute(5))
        assert await heartbeats.beat(report.evaluated, minute(5)) == 1
        # A document the evaluator cannot read (as if written by a newer version): it fails.
        import psycopg

        with psycopg.connect(estate.dsn) as conn:
            conn.execute("UPDATE alert_configs SET document = document || '{\"rules\": 5}'")
        report = await evaluator.cycle(minute(7))
        assert report.failed == [estate.tenant_id]
        assert await heartbeats.beat(report.evaluated, minute(7)) == 0
    assert len(sink.events()) == 1


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("heartbeat: {receiver: nobody}", "unknown receiver"),
        (
            "receivers: [{name: m, email: {host: h, from: a@b.c, to: [d@e.f]}}]\nheartbeat: {receiver: m}",
            "webhook or an alertmanager",
        ),
        (
            "receivers: [{name: w, webhook: {url: 'https://x.example'}}]\n"
            "heartbeat: {receiver: w, every: 1s}",
            "at least 10s",
        ),
    ],
)
def test_bad_heartbeats_are_refused_with_the_reason(text: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse(text)
