"""Fuzzing the decoders and scrubbers (RELIABILITY.md T-22, the atheris half).

Short runs here (``TIERSCOPE_FUZZ_SECONDS``, 4 s per target by default);
``make fuzz`` runs each target for minutes. Every input ever saved (seed corpus
and fixed crashers) is replayed on each run, so a crash once found stays fixed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tierscope.testing.figures import Tally, tally
from tierscope.testing.fuzz_targets import TARGETS

HERE = Path(__file__).parent
SECONDS = int(os.environ.get("TIERSCOPE_FUZZ_SECONDS", "4"))
SAVED = sorted(
    (target, path)
    for target in TARGETS
    for folder in ("corpus", "crashers")
    for path in (HERE / folder / target).glob("*")
    if path.is_file() and not path.name.startswith(".")
)


def t22() -> Tally:
    return tally("T-22 decoders").describe(
        "atheris (coverage-guided) on the OTLP decoder and conversion (protobuf and JSON), the lazy "
        "wire reader, the RUM beacon parser, SQL normalization and the agent's scrubbers, from a seed "
        "corpus; Hypothesis bytes on the same targets; every saved input replayed",
        "no exception but the documented 400 errors, no hang (10 s per input), no memory past 1 GiB; "
        "the wire reader agrees with the protobuf decoder",
    ).note(targets=len(TARGETS), seconds_per_target=SECONDS)


def test_every_target_has_a_seed_corpus() -> None:
    for target in TARGETS:
        assert any((HERE / "corpus" / target).iterdir()), f"tests/fuzz/corpus/{target}/ is empty"


@pytest.mark.parametrize(("target", "path"), SAVED, ids=lambda v: v.name if isinstance(v, Path) else v)
def test_saved_inputs_pass(target: str, path: Path) -> None:
    TARGETS[target](path.read_bytes())
    t22().count(saved_inputs_replayed=1)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_atheris_finds_no_crash(target: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="no atheris build for this Python; the Hypothesis run covers it")
    found = tmp_path / "found"
    found.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            str(HERE / "run_atheris.py"),
            target,
            f"-max_total_time={SECONDS}",
            "-timeout=10",  # one input taking longer is a hang, reported as a crash
            "-rss_limit_mb=1024",
            f"-artifact_prefix={tmp_path}/",
            str(found),  # new inputs go here, not into the repository
            str(HERE / "corpus" / target),
        ],
        capture_output=True,
        text=True,
        timeout=SECONDS + 120,
    )
    crashes = [p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-"))]
    assert result.returncode == 0, (
        f"{target}: {crashes}; fix it, then copy the input to tests/fuzz/crashers/{target}/\n"
        + result.stderr[-3000:]
    )
    assert not crashes
    runs = [line for line in result.stderr.splitlines() if line.startswith("Done ")]
    assert runs, result.stderr[-2000:]
    inputs = int(runs[-1].split()[1])  # "Done 18342 runs in 4 second(s)"
    t22().count(atheris_inputs=inputs, crashes=0).count_in("atheris_inputs_per_target", target, inputs)


@pytest.mark.parametrize("target", sorted(TARGETS))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes_reach_no_crash(target: str, data: bytes) -> None:
    # The same targets without coverage guidance: runs wherever Hypothesis does.
    TARGETS[target](data)
    t22().count(hypothesis_inputs=1)


def test_the_wire_reader_steps_aside_for_a_span_with_a_repeated_id() -> None:
    """The first fuzzer find: field 2 twice made the index miss every attribute."""
    from opentelemetry.proto.trace.v1.trace_pb2 import Span

    from tierscope.collector import otlp, wire

    (raw,) = [path.read_bytes() for path in (HERE / "crashers" / "wire").glob("repeated-span-id-*")]
    span = Span.FromString(raw)
    assert wire.attribute_index(raw) is None
    decoded = otlp.attributes(span.attributes)
    assert decoded["db.system"] == "postgresql"
    assert wire.SpanAttributes(span, raw).get(wire.Key("db.system")) == "postgresql"
    assert wire.AttributeMap(raw).get("db.system") == "postgresql"
