"""The tables of docs/reliability.md: rows gathered over many tests add up, and
the security table is placed between its markers without touching the rest."""

from __future__ import annotations

from tierscope.testing.figures import Tally
from tierscope.testing.reliability import place, security_table


def test_a_tally_adds_counts_keeps_peaks_and_orders_statuses() -> None:
    row = Tally("T-09").describe("garbage", "never 500")
    for status in (415, 200, 400, 200):
        row.count(requests=1).count_in("answers", status)
    row.count_in("kinds", "refused").count_in("kinds", "accepted")
    row.peak(rss_growth_mib=12.5).peak(rss_growth_mib=3.0)
    row.files.update({"tests/b.py", "tests/a.py"})
    written = row.row()
    assert written["requests"] == 4
    assert list(written["answers"].items()) == [("200", 2), ("400", 1), ("415", 1)]
    assert list(written["kinds"]) == ["refused", "accepted"], "labels keep the order they came in"
    assert written["rss_growth_mib"] == 12.5
    assert written["tests"] == ["tests/a.py", "tests/b.py"]


def test_the_security_table_lists_rows_in_plan_order_with_their_figures_and_tests() -> None:
    rows = [
        {"test": "T-22 API", "attack": "schemathesis", "held": "no 5xx", "requests": 570, "tests": ["x.py"]},
        {"test": "T-09", "attack": "a | pipe", "held": "ok", "answers": {"400": 3}, "tests": []},
    ]
    lines = security_table(rows).splitlines()
    assert lines[0] == "| test | attack | what held | figures | tests |"
    assert lines[2] == "| T-09 | a \\| pipe | ok | answers: 400 3 | — |"
    assert lines[3] == "| T-22 API | schemathesis | no 5xx | requests: 570 | `x.py` |"


def test_the_table_goes_between_its_markers_only() -> None:
    document = (
        "intro\n<!-- reliability:short:begin -->\nfaults\n<!-- reliability:short:end -->\n"
        "<!-- reliability:security:begin -->\nold\n<!-- reliability:security:end -->\nafter\n"
    )
    placed = place(document, "security", "new")
    assert "old" not in placed
    assert "<!-- reliability:security:begin -->\nnew\n<!-- reliability:security:end -->\nafter" in placed
    assert "\nfaults\n" in placed
    assert placed.startswith("intro\n")
