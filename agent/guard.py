"""The agent never breaks the application: errors in agent code stop here.

``TIERSCOPE_AGENT_ERRORS_FILE``: a file every swallowed error's traceback is
appended to (debugging; the tests set it to fail on any).

Every agent code path that runs on the application's threads or in the
exporter runs inside :func:`guarded`; an error is logged (rate-limited by the
logging system's own handlers), counted, and handed to the hooks registered
with :func:`on_swallowed` — tests register one that fails the test, so an
error the agent hid from the application still cannot hide from its tests.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager

logger = logging.getLogger("tierscope.agent")

_hooks: list[Callable[[BaseException], None]] = []
_counter: list[Callable[[], None]] = []


def on_swallowed(hook: Callable[[BaseException], None]) -> Callable[[], None]:
    """Call ``hook(error)`` for every error the agent swallows; returns an unregister function."""
    _hooks.append(hook)

    def remove() -> None:
        if hook in _hooks:
            _hooks.remove(hook)

    return remove


def count_with(counter: Callable[[], None]) -> None:
    """Where swallowed errors are counted (the running agent's stats)."""
    _counter[:] = [counter]


def swallowed(error: BaseException) -> None:
    """Record an error that was kept from reaching the application."""
    try:
        for count in _counter:
            count()
        logger.debug("tierscope agent: internal error swallowed", exc_info=error)
        for hook in list(_hooks):
            hook(error)
        errors_file = os.environ.get("TIERSCOPE_AGENT_ERRORS_FILE")
        if errors_file:  # a debugging aid (and how tests see errors in app processes)
            with open(errors_file, "a") as out:
                out.write(f"pid {os.getpid()}:\n{''.join(traceback.format_exception(error))}\n")
    except Exception:  # noqa: S110 - a hook or handler failing must not fail the app either
        pass


@contextmanager
def guarded() -> Iterator[None]:
    """Run agent code; an ``Exception`` from it is swallowed and recorded."""
    try:
        yield
    except Exception as error:
        swallowed(error)
