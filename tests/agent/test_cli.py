"""``tierscope-agent``: ``run`` hands over to the command (its exit code is the
command's), ``config`` says what the agent would do, mistakes get clear messages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

AGENT = str(Path(sys.executable).with_name("tierscope-agent"))


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TIERSCOPE_", "OTEL_"))}
    return subprocess.run([AGENT, *args], capture_output=True, text=True, env={**clean, **env}, timeout=60)


def test_run_hands_over_exit_code_and_starts_the_agent_in_the_command() -> None:
    code = "import sys, tierscope.agent; a = tierscope.agent.current(); print(a.config.service); sys.exit(3)"
    result = _run(
        "run",
        "--",
        sys.executable,
        "-c",
        code,
        TIERSCOPE_ENDPOINT="http://127.0.0.1:9",
        TIERSCOPE_SERVICE="erp",
    )
    assert result.returncode == 3, result.stderr
    assert result.stdout.strip() == "erp"


CASES = {
    "run without a command is refused": (["run"], 2, "run needs a command"),
    "run of a missing program says so": (["run", "--", "no-such-program-here"], 127, "cannot run"),
    "config without an endpoint says the agent will do nothing": (["config"], 1, "not configured"),
}


@pytest.mark.parametrize(("args", "code", "message"), CASES.values(), ids=CASES.keys())
def test_mistakes(args: list[str], code: int, message: str) -> None:
    result = _run(*args)
    assert result.returncode == code
    assert message in result.stdout + result.stderr


def test_config_shows_where_spans_go() -> None:
    result = _run("config", TIERSCOPE_ENDPOINT="http://collector:4318", TIERSCOPE_SERVICE="crm-web")
    assert result.returncode == 0
    assert "'crm-web' exports to http://collector:4318/v1/traces" in result.stdout
    assert "ingest key: NOT SET" in result.stdout
