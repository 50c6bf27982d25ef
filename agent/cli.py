"""``tierscope-agent``: run any Python application instrumented, without changing it.

    tierscope-agent run -- gunicorn -w 4 crm.wsgi
    tierscope-agent run -- uvicorn erp.main:app --workers 2
    tierscope-agent run -- python manage.py runserver

``run`` puts :mod:`tierscope.agent.autostart` on ``PYTHONPATH`` (its
``sitecustomize`` calls :func:`tierscope.agent.init` when any Python process of
the command starts) and replaces itself with the command, so signals, exit
codes and process supervision are exactly those of the command alone.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from tierscope.agent import autostart, config


def autostart_path() -> str:
    return str(Path(autostart.__file__).parent)


def environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The command's environment: ours first on PYTHONPATH, the rest kept."""
    env = dict(os.environ if base is None else base)
    paths = [autostart_path(), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def _status() -> int:
    settings = config.from_environment()
    if not settings.enabled:
        print("tierscope agent: not configured (set TIERSCOPE_ENDPOINT); it will do nothing")
        return 1
    print(f"tierscope agent: service {settings.service!r} exports to {settings.traces_url}")
    print(f"ingest key: {'set' if settings.ingest_key else 'NOT SET'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tierscope-agent", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a command with the agent started in its Python processes")
    run.add_argument("argv", nargs=argparse.REMAINDER, help="the command, after --")
    commands.add_parser("config", help="show what the agent would do with this environment")
    args = parser.parse_args(argv)
    if args.command == "config":
        return _status()
    command = list(args.argv)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        parser.error("run needs a command, e.g. tierscope-agent run -- gunicorn app:app")
    executable = shutil.which(command[0]) or command[0]
    try:
        os.execve(executable, command, environment())  # noqa: S606 - the user's own command
    except OSError as error:
        print(f"tierscope-agent: cannot run {command[0]!r}: {error}", file=sys.stderr)
        return 127
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
