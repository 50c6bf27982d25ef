"""Figures the tests measure, for the tables of docs/reliability.md.

A test that proves a row of the reliability plan records what it measured,
after its assertions, so a figure exists only for a test that passed. When
``TIERSCOPE_RELIABILITY_OUT`` names a file (``make reliability`` and
``make security`` set it), each row is appended there as one JSON line and
``tierscope.testing.reliability`` turns the lines into a table.

Two ways to record:

- :class:`Figures` writes one row at once: a fault test measures everything
  in one function (``figures("T-02").record(sent=..., lost=0)``).
- :class:`Tally` gathers one row over many tests, parametrised cases or
  Hypothesis examples (T-09 is 34 cases over four functions); each adds its
  counts, and the rows are written when the session ends, only if every test
  of the session passed (tests/conftest.py, ``pytest_sessionfinish``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SOAK = os.environ.get("TIERSCOPE_SOAK") == "1"


def out_path() -> Path | None:
    out = os.environ.get("TIERSCOPE_RELIABILITY_OUT")
    return Path(out) if out else None


def write_row(row: dict[str, Any], echo: bool = True) -> None:
    if echo:
        print(json.dumps(row))  # shown with -s; the table is built from the file
    out = out_path()
    if out is not None:
        with out.open("a") as handle:
            handle.write(json.dumps(row) + "\n")


@dataclass
class Figures:
    """What one test measured, written as one row."""

    test: str

    def record(self, **values: Any) -> None:
        write_row({"test": self.test, "soak": SOAK, **values})


@dataclass
class Tally:
    """One row gathered over many tests: counts add up, peaks keep the highest."""

    test: str
    values: dict[str, Any] = field(default_factory=dict)
    files: set[str] = field(default_factory=set)

    def describe(self, attack: str, held: str) -> Tally:
        self.values["attack"], self.values["held"] = attack, held
        return self

    def count(self, **numbers: int) -> Tally:
        for key, number in numbers.items():
            self.values[key] = self.values.get(key, 0) + number
        return self

    def count_in(self, key: str, label: str | int, number: int = 1) -> Tally:
        """Count under a label, e.g. ``count_in("answers", 413)``."""
        counts = self.values.setdefault(key, {})
        counts[str(label)] = counts.get(str(label), 0) + number
        return self

    def peak(self, **numbers: float) -> Tally:
        for key, number in numbers.items():
            self.values[key] = max(self.values.get(key, number), number)
        return self

    def note(self, **values: Any) -> Tally:
        self.values.update(values)
        return self

    def row(self) -> dict[str, Any]:
        values = {
            key: dict(sorted(value.items())) if isinstance(value, dict) and _numbered(value) else value
            for key, value in self.values.items()
        }  # counts by status code in order of the code
        return {"test": self.test, "soak": SOAK, **values, "tests": sorted(self.files)}


def _numbered(counts: dict[str, Any]) -> bool:
    return all(key.isdigit() for key in counts)


# One registry per pytest session (this module is imported once, unlike a conftest).
TALLIES: dict[str, Tally] = {}
current_file = [""]  # the test file running now, set by tests/conftest.py


def tally(test: str) -> Tally:
    row = TALLIES.setdefault(test, Tally(test))
    if current_file[0]:
        row.files.add(current_file[0])
    return row


def write_tallies(echo: bool) -> int:
    """Write the gathered rows (``echo``: print them too, for ``pytest -s``)."""
    if out_path() is None and not echo:
        return 0
    for row in TALLIES.values():
        write_row(row.row(), echo)
    return len(TALLIES)
