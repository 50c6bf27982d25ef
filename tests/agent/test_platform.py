"""The platform tier: a job enqueued by a request into a PostgreSQL table and run by
a worker process joins (or links to) the request's trace; a thread started by a
request joins it; a scheduler thread with no request is marked as background."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from tierscope.testing.apps import AppProcess, fetch_trace, recent_traces, server_timing
from tierscope.testing.collector import CollectorProcess, free_port


@pytest.fixture
def crm(collector: CollectorProcess, run_app: Callable[..., AppProcess]) -> AppProcess:
    port = free_port()
    return run_app(
        ["gunicorn", "-w", "1", "-b", f"127.0.0.1:{port}", "flask_app:app"],
        collector,
        service="crm-web",
        port=port,
        env={"APP_SCHEDULER": "1"},
    )


JOB_MODES = {"the job joins the request's trace": False, "the job starts a trace linked to the request": True}


@pytest.mark.parametrize("link", JOB_MODES.values(), ids=JOB_MODES.keys())
def test_a_job_run_by_a_worker_shows_up_with_the_request(
    collector: CollectorProcess, run_app: Callable[..., AppProcess], crm: AppProcess, link: bool
) -> None:
    response = httpx.post(f"{crm.url}/jobs/post_invoice", timeout=30)
    assert response.status_code == 200, response.text
    trace_id, server_span_id = server_timing(response)
    worker = run_app(
        ["python", "job_worker.py"],
        collector,
        service="crm-worker",
        env={"WORKER_JOBS": "1", "JOB_LINK": "1" if link else "0"},
    )
    assert worker.wait(60) == 0, worker.log()
    assert "worker ran 1 jobs" in worker.log()

    if not link:
        spans = fetch_trace(collector, trace_id, spans=4)
        (job,) = [span for span in spans if span["name"] == "post_invoice"]
        assert job["parent_span_id"] == server_span_id
    else:
        request_spans = fetch_trace(collector, trace_id, spans=2)
        assert "post_invoice" not in [span["name"] for span in request_spans]
        job = _find_job_span(collector, server_span_id)
        spans = fetch_trace(collector, job["trace_id"], spans=2)
        assert job["parent_span_id"] is None
        assert [(lk["trace_id"], lk["span_id"]) for lk in job["links"]] == [(trace_id, server_span_id)]
    assert job["kind"] == "consumer"
    assert job["tier"] == "platform"
    assert job["service"] == "crm-worker"
    (query,) = [span for span in spans if span["parent_span_id"] == job["span_id"]]
    assert query["tier"] == "db"
    assert query["component"] == "SELECT pg_sleep(?)"


def _find_job_span(collector: CollectorProcess, linked_span_id: str) -> dict:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for listed in recent_traces(collector, "crm-worker"):
            for span in fetch_trace(collector, listed["trace_id"], spans=1):
                if any(link["span_id"] == linked_span_id for link in span["links"]):
                    return span
        time.sleep(0.3)
    raise AssertionError("no job span linked to the request arrived")


def test_a_thread_started_by_a_request_joins_its_trace(collector: CollectorProcess, crm: AppProcess) -> None:
    response = httpx.get(f"{crm.url}/recount/5", timeout=30)
    assert response.status_code == 200
    trace_id, server_span_id = server_timing(response)
    spans = fetch_trace(collector, trace_id, spans=2)
    by_id = {span["span_id"]: span for span in spans}
    (query,) = [span for span in spans if span["component"] == "SELECT %s::int * ?"]
    # Up the parent chain from the thread's query to the request.
    chain = [query]
    while chain[-1]["parent_span_id"] is not None:
        chain.append(by_id[chain[-1]["parent_span_id"]])
    assert chain[-1]["span_id"] == server_span_id
    assert "tierscope.background" not in query["attributes"]


def test_a_scheduler_thread_without_a_request_is_marked_background(
    collector: CollectorProcess, crm: AppProcess
) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for listed in recent_traces(collector, "crm-web"):
            (span,) = fetch_trace(collector, listed["trace_id"], spans=1)[:1]
            if span["attributes"].get("db.system") == "sqlite":
                assert span["parent_span_id"] is None
                assert span["attributes"]["tierscope.background"] is True
                assert span["tier"] == "db"
                return
        time.sleep(0.3)
    raise AssertionError("no span of the scheduler thread arrived")
