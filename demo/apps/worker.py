"""``erp-worker``: runs the ERP's background jobs (customer imports, invoice
approval workflows) from the ``jobs`` table — the platform tier. Each job runs
inside ``tierscope.agent.run_job`` with the context stored when it was enqueued,
so its spans join the trace of the request that asked for it.

Run as ``python -m tierscope.demo.apps.worker`` (under ``tierscope-agent run``).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType
from typing import Any

from opentelemetry.instrumentation.utils import suppress_instrumentation

import tierscope.agent
from tierscope.demo.apps.common import die_with_parent, faults, pool

_logger = logging.getLogger("erp-worker")
POLL_SECONDS = 0.2
_stop = threading.Event()


def _claim(conn: Any) -> tuple[int, str, dict[str, Any], dict[str, str]] | None:
    # Polling is the queue's machinery, not work anyone asked for: not traced.
    with suppress_instrumentation(), conn.transaction():
        return conn.execute(  # type: ignore[no-any-return]
            "UPDATE jobs SET state = 'running', started_at = now() WHERE id = ("
            " SELECT id FROM jobs WHERE state = 'queued' ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1)"
            " RETURNING id, kind, payload, trace"
        ).fetchone()


def run(job_id: int, kind: str, payload: dict[str, Any], carrier: dict[str, str], conn: Any) -> None:
    with tierscope.agent.run_job(carrier, kind, attributes={"tierscope.job.id": job_id}):
        if faults.active("worker_backlog"):
            # A starved worker: every job is slower, and at busy times the queue grows. Not
            # slower than this: a job that starts later than the settle delay after its
            # request is a late span, left out of the trace that shows the fault.
            time.sleep(0.4)
        if kind == "import_customers":
            with conn.transaction():
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO import_rows (job_id, line, name) VALUES (%s, %s, %s)",
                        [(job_id, line, f"Imported {line}") for line in range(int(payload["rows"]))],
                    )
                conn.execute("DELETE FROM import_rows WHERE job_id < %s", (job_id - 100,))
        elif kind == "invoice_workflow":
            with conn.transaction():
                conn.execute("SELECT amount FROM invoices WHERE id = %s", (payload["invoice"],))
                time.sleep(0.02)  # the approval rule engine
                conn.execute(
                    "UPDATE jobs SET payload = payload || '{\"approved\": true}' WHERE id = %s", (job_id,)
                )
        conn.execute("UPDATE jobs SET state = 'done', finished_at = now() WHERE id = %s", (job_id,))


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    die_with_parent()

    def stop(signum: int, frame: FrameType | None) -> None:
        _stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    db = pool(size=2)
    with db.connection() as conn:
        conn.autocommit = True
        while not _stop.is_set():
            claimed = _claim(conn)
            if claimed is None:
                _stop.wait(POLL_SECONDS)
                continue
            job_id, kind, payload, carrier = claimed
            try:
                run(job_id, kind, payload, carrier, conn)
            except Exception:
                _logger.exception("job %s (%s) failed", job_id, kind)
                conn.execute("UPDATE jobs SET state = 'failed' WHERE id = %s", (job_id,))
    db.close()


if __name__ == "__main__":
    main()
