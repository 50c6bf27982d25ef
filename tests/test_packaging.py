"""The distribution installs what the repository holds, under tierscope.* only,
and the agent never pulls in the server side."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
ARCHITECTURE = [
    "agent",
    "alerting",
    "cli",
    "collector",
    "config",
    "dashboards",
    "demo",
    "processing",
    "slo",
    "store",
    "testing",
]


def package_folders() -> set[str]:
    found = set()
    for top in ARCHITECTURE:
        for init in (ROOT / top).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT)
            found.add("tierscope." + ".".join(relative.parts))
    return found


DATA_PACKAGES = {  # SQL files, templates, static files, dashboards: no code
    "tierscope.collector.static",
    "tierscope.dashboards.console.static",
    "tierscope.dashboards.console.templates",
    "tierscope.dashboards.generated",
    "tierscope.dashboards.templates",
    "tierscope.store.sql",
    "tierscope.store.sql.migrations",
}


def test_every_package_folder_is_installed() -> None:
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert set(setuptools["packages"]) == package_folders() | DATA_PACKAGES
    for top in ARCHITECTURE:
        assert setuptools["package-dir"][f"tierscope.{top}"] == top


def test_the_agent_imports_nothing_from_the_server_side() -> None:
    probe = (
        "import sys, tierscope.agent; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('fastapi', 'psycopg', 'psycopg_pool', "
        "'uvicorn', 'starlette', 'pydantic_settings', 'numpy') or m.startswith(('tierscope.collector', "
        "'tierscope.store', 'tierscope.config', 'tierscope.cli'))]; "
        "print(','.join(bad))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_the_base_install_is_only_what_the_agent_needs() -> None:
    base = PYPROJECT["project"]["dependencies"]
    assert all(dep.startswith("opentelemetry-") for dep in base), base
    assert "fastapi" in " ".join(PYPROJECT["project"]["optional-dependencies"]["server"])


def test_the_wheel_carries_the_sql_files_and_no_top_level_generic_names(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("tierscope-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"tierscope", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    assert "tierscope/store/sql/queries.sql" in names
    assert "tierscope/store/sql/schema.sql" in names
    assert "tierscope/store/sql/migrations/0002_spans.timescale.sql" in names
    assert "tierscope/store/sql/migrations/0004_trace_summaries.timescale.sql" in names
    assert "tierscope/collector/ingest.py" in names
    assert "tierscope/agent/autostart/sitecustomize.py" in names  # what `tierscope-agent run` relies on
    # The console's and the report's templates, the console's stylesheet, the committed dashboards.
    assert "tierscope/dashboards/console/templates/overview.html.j2" in names
    assert "tierscope/dashboards/console/static/console.css" in names
    assert "tierscope/dashboards/templates/report.html.j2" in names
    assert "tierscope/dashboards/generated/tierscope-platform.json" in names
    assert "tierscope/collector/static/rum.js" in names
    assert "tierscope/store/sql/migrations/0007_rum.sql" in names
