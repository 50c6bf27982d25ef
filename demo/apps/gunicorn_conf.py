"""gunicorn settings of ``crm-web`` (passed with ``-c``)."""

from __future__ import annotations

from typing import Any

from tierscope.demo.apps.common import die_with_parent


def when_ready(server: Any) -> None:
    # The master follows the estate; its workers already follow the master.
    die_with_parent()
