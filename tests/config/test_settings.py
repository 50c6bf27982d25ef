"""Settings: each declared once, documented, and refused clearly when wrong."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from tierscope.config import Settings, SettingsError, load_settings, parse_duration, parse_size
from tierscope.config.settings import ENV_PREFIX

DOCS = Path(__file__).parents[2] / "docs" / "configuration.md"


def test_every_setting_is_documented_with_its_description() -> None:
    documented = dict(re.findall(r"^\| `(TIERSCOPE_[A-Z_]+)` \| [^|]+ \| (.+) \|$", DOCS.read_text(), re.M))
    declared = {ENV_PREFIX + name.upper(): field.description for name, field in Settings.model_fields.items()}
    assert documented.keys() == declared.keys()
    for variable, description in declared.items():
        assert documented[variable] == description, variable


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", timedelta(milliseconds=500)),
        ("15s", timedelta(seconds=15)),
        ("2m", timedelta(minutes=2)),
        ("7d", timedelta(days=7)),
        ("1.5h", timedelta(minutes=90)),
        ("30", timedelta(seconds=30)),
        ("2w", timedelta(weeks=2)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2048", 2048), ("2KiB", 2048), ("64MiB", 64 << 20), ("1GB", 10**9), ("3 mib", 3 << 20)],
)
def test_sizes(text: str, expected: int) -> None:
    assert parse_size(text) == expected


def test_environment_then_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERSCOPE_PORT", "5000")
    monkeypatch.setenv("TIERSCOPE_RETENTION_SPANS", "30d")
    assert load_settings().port == 5000
    assert load_settings(port=6000).port == 6000
    assert load_settings().retention_spans == timedelta(days=30)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("TIERSCOPE_PORT", "http", "TIERSCOPE_PORT='http' is not valid"),
        ("TIERSCOPE_PORT", "70000", "TIERSCOPE_PORT='70000' is not valid"),
        ("TIERSCOPE_MAX_BODY_SIZE", "64 furlongs", "expected a size such as 2048, 2KiB or 64MiB"),
        ("TIERSCOPE_SPAN_MAX_AGE", "soon", "expected a duration such as 500ms, 15s, 2m, 6h or 7d"),
        ("TIERSCOPE_LOG_LEVEL", "chatty", "TIERSCOPE_LOG_LEVEL='chatty'"),
        ("TIERSCOPE_WORKERS", "0", "TIERSCOPE_WORKERS='0'"),
        ("TIERSCOPE_SPAN_MAX_AGE", "10d", "must be shorter than TIERSCOPE_RETENTION_SPANS"),
    ],
)
def test_bad_values_name_the_variable_and_what_is_expected(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=re.escape(message)):
        load_settings()
