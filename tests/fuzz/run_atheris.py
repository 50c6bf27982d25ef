"""Coverage-guided fuzzing of one target with atheris (libFuzzer for Python).

    python tests/fuzz/run_atheris.py TARGET [libFuzzer options] [corpus dirs]

TARGET is a name in tierscope.testing.fuzz_targets.TARGETS (otlp, wire, beacon,
sqlnorm, scrub). ``make fuzz`` runs each for FUZZ_SECONDS; ``make test`` runs a
few seconds of each (tests/fuzz/test_fuzz.py). An input that makes a target
raise is written as ``crash-<sha1>`` to ``-artifact_prefix``: copy it into
``tests/fuzz/crashers/TARGET/`` once fixed, and it is replayed by every test run.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["tierscope"]):
    from tierscope.testing.fuzz_targets import TARGETS


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: run_atheris.py {{{','.join(TARGETS)}}} [libFuzzer options] [corpus dirs]")
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
