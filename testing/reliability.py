"""Run the fault and overload tests and write their figures into docs/reliability.md.

    .venv/bin/python -m tierscope.testing.reliability          # make reliability
    .venv/bin/python -m tierscope.testing.reliability --soak   # make soak (long variants)
    .venv/bin/python -m tierscope.testing.reliability --t23    # make soak-t23 (the 2-hour soak)
    .venv/bin/python -m tierscope.testing.reliability --security  # make security (T-09 to T-22)

Runs ``pytest tests/reliability`` with ``TIERSCOPE_RELIABILITY_OUT`` set; each
test appends one JSON line with what it injected, what held and its figures.
The lines become a Markdown table placed between the markers of the
"Faults and overload" section (one table for the short variants, one for the
long variants, one for the 2-hour soak T-23, which runs on its own because it
takes the machine for hours), so the document always shows what the last run
measured. ``--security`` runs the tests of the attacks (T-09 to T-22) instead
and writes the table of the "Security and access" section; their rows are
gathered over many tests and cases (``tierscope.testing.figures.Tally``). The
exit code is pytest's: a failing test leaves the table as it was.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ORDER = [
    *("T-01", "T-02", "T-03", "T-04", "T-05", "T-06", "T-07", "T-08", "T-08 429", "T-08 SDK 1.39"),
    *("overload", "T-24", "T-24 slow body", "T-23"),
]
# The columns every fault test fills; the rest of a row's figures go to "other".
MAIN = ["sent", "acknowledged", "stored", "lost", "duplicates", "rss_mib", "recovery_s"]
HEADINGS = ["sent", "acknowledged", "stored", "lost", "dup.", "RSS MiB", "recovery s"]
SKIP = {"test", "soak", "fault", "held"}
# Settings that shorten the soak; a table made with them says so.
SOAK_KNOBS = ("TIERSCOPE_SOAK_SECONDS", "TIERSCOPE_SOAK_FAULT_EVERY", "TIERSCOPE_SOAK_DISK_SHARE")
T23 = "tests/reliability/test_t23_soak.py"

# The tests that prove T-09 to T-22, and the order of their rows.
EVALUATOR = "tests/alerting/test_evaluator.py::"
SECURITY_TESTS = [
    "tests/e2e/test_status_contract.py",
    "tests/e2e/test_cardinality.py",
    "tests/security",
    "tests/rum/test_endpoint.py",
    "tests/rum/test_xss.py",
    "tests/agent/test_scrub.py",
    "tests/alerting/test_delivery.py",
    EVALUATOR + "test_a_restart_mid_incident_neither_pages_again_nor_loses_the_alert",
    EVALUATOR + "test_a_restart_while_pending_keeps_the_pending_time_and_fires_on_time",
    EVALUATOR + "test_a_store_gone_during_evaluations_resolves_nothing_and_loses_no_notification",
    EVALUATOR + "test_a_failed_evaluation_or_missing_data_never_resolves_a_firing_alert",
    "tests/fuzz/test_fuzz.py",
]
SECURITY_ORDER = [f"T-{n:02d}" for n in range(9, 22)] + ["T-22 decoders", "T-22 API"]
SECURITY_SKIP = {"test", "soak", "attack", "held", "tests"}


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, list):
        return "; ".join(_cell(item) for item in value)
    if isinstance(value, dict):
        return ", ".join(f"{key} {_cell(item)}" for key, item in value.items())
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of one run, in test order."""
    rows = sorted(rows, key=lambda row: ORDER.index(row["test"]) if row["test"] in ORDER else len(ORDER))
    lines = [
        "| test | fault injected | what held | " + " | ".join(HEADINGS) + " | other figures |",
        "|---|---|---|" + "---:|" * len(HEADINGS) + "---|",
    ]
    for row in rows:
        main = [_cell(row.get(key)) for key in MAIN]
        extra = {key: value for key, value in row.items() if key not in SKIP | set(MAIN)}
        other = "; ".join(f"{key}: {_cell(value)}" for key, value in extra.items())
        lines.append(
            f"| {row['test']} | {_cell(row.get('fault'))} | {_cell(row.get('held'))} | "
            + " | ".join(main)
            + f" | {other or '—'} |"
        )
    return "\n".join(lines)


def security_table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of the attacks: every figure a row gathered, and its tests."""

    def rank(row: dict[str, Any]) -> int:
        return SECURITY_ORDER.index(row["test"]) if row["test"] in SECURITY_ORDER else len(SECURITY_ORDER)

    lines = ["| test | attack | what held | figures | tests |", "|---|---|---|---|---|"]
    for row in sorted(rows, key=rank):
        found = "; ".join(f"{k}: {_cell(v)}" for k, v in row.items() if k not in SECURITY_SKIP)
        tests = ", ".join(f"`{name}`" for name in row.get("tests", []))
        lines.append(
            f"| {row['test']} | {_cell(row.get('attack'))} | {_cell(row.get('held'))} | "
            f"{found or '—'} | {tests or '—'} |"
        )
    return "\n".join(lines)


def place(document: str, variant: str, body: str) -> str:
    """Put ``body`` between the markers of ``variant`` (short or soak)."""
    begin, end = f"<!-- reliability:{variant}:begin -->", f"<!-- reliability:{variant}:end -->"
    if begin not in document or end not in document:
        raise SystemExit(f"docs/reliability.md has no {begin} ... {end} markers: put them back")
    head, rest = document.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}\n{end}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--soak", action="store_true", help="the long variants of the fault tests")
    parser.add_argument("--t23", action="store_true", help="the 2-hour soak T-23 alone")
    parser.add_argument("--security", action="store_true", help="the attack tests T-09 to T-22")
    parser.add_argument("--doc", type=Path, default=Path("docs/reliability.md"))
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (e.g. -k T03)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="tierscope-reliability-") as directory:
        out = Path(directory) / "figures.jsonl"
        env = {**os.environ, "TIERSCOPE_RELIABILITY_OUT": str(out)}
        if args.soak or args.t23:
            env["TIERSCOPE_SOAK"] = "1"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        if args.security:
            command += SECURITY_TESTS
        elif args.t23:
            command += [T23, "-o", "timeout=0"]  # the soak runs for hours
        elif args.soak:
            command += ["tests/reliability", f"--ignore={T23}", "-o", "timeout=0"]
        else:
            command += ["tests/reliability"]
        code = subprocess.call([*command, *args.pytest_args], env=env)
        rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    if code != 0:
        print(f"pytest failed (exit {code}); {args.doc} left as it was", file=sys.stderr)
        return code
    variant = "security" if args.security else "t23" if args.t23 else "soak" if args.soak else "short"
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command_line = {
        "security": "make security",
        "t23": "make soak-t23",
        "soak": "make soak-long",
        "short": "make reliability",
    }[variant]
    shortened = [f"{name}={os.environ[name]}" for name in SOAK_KNOBS if name in os.environ]
    if shortened:
        command_line = f"{' '.join(shortened)} {command_line}"
    if args.pytest_args:  # a narrowed run says so
        command_line += f" (pytest {' '.join(args.pytest_args)})"
    rendered = security_table(rows) if args.security else table(rows)
    body = f"Last run: {stamp}, `{command_line}`.\n\n{rendered}"
    args.doc.write_text(place(args.doc.read_text(), variant, body))
    print(f"{len(rows)} rows written to {args.doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
