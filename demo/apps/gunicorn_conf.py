"""gunicorn settings of ``crm-web`` (passed with ``-c``)."""

from __future__ import annotations

from typing import Any

from tierscope.demo.apps.common import die_with_parent

graceful_timeout = 5  # Ctrl-C or SIGTERM: in-flight requests get this long


def when_ready(server: Any) -> None:
    # The master follows the estate...
    die_with_parent()


def post_fork(server: Any, worker: Any) -> None:
    # ...and each worker its master, even when a Ctrl-C reaches the master and
    # the worker at the same moment and the master is gone first.
    die_with_parent()
