"""Delivering the dashboards: the datasources they need, and files for
Grafana's file provisioning (``tierscope dashboards export DIR``).

Grafana reads ``provisioning/datasources/*.yaml`` and
``provisioning/dashboards/*.yaml`` at start; the dashboards provider points at
the JSON files written next to them. Point Grafana's ``paths.provisioning`` at
``DIR/provisioning`` (or copy the files into its own).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from psycopg.conninfo import conninfo_to_dict

from tierscope.dashboards.boards import all_dashboards
from tierscope.dashboards.grafana import POSTGRES, PROMETHEUS

FOLDER_UID = "tierscope"
FOLDER_TITLE = "tierscope"


@dataclass(frozen=True)
class Sources:
    """Where Grafana finds tierscope's data."""

    database_url: str  # the store (a read-only role is enough: the panels only SELECT)
    prometheus_url: str | None = None  # a Prometheus server scraping the collectors' /metrics

    def datasources(self) -> list[dict[str, Any]]:
        """In the shape both Grafana's HTTP API and its provisioning files take."""
        parts = conninfo_to_dict(self.database_url)
        host, port = parts.get("host") or "127.0.0.1", parts.get("port") or "5432"
        found: list[dict[str, Any]] = [
            {
                "name": "tierscope PostgreSQL",
                "type": POSTGRES["type"],
                "uid": POSTGRES["uid"],
                "access": "proxy",
                "url": f"{host}:{port}",
                "user": parts.get("user", ""),
                "jsonData": {
                    "database": parts.get("dbname", ""),
                    "sslmode": parts.get("sslmode", "disable"),
                    "postgresVersion": 1500,
                    "timescaledb": False,
                },
                "secureJsonData": {"password": parts.get("password", "")},
            }
        ]
        if self.prometheus_url:
            found.append(
                {
                    "name": "tierscope Prometheus",
                    "type": PROMETHEUS["type"],
                    "uid": PROMETHEUS["uid"],
                    "access": "proxy",
                    "url": self.prometheus_url,
                    "jsonData": {"httpMethod": "POST"},
                }
            )
        return found


def dashboards_json(tenant_id: int) -> dict[str, dict[str, Any]]:
    """Every dashboard's JSON, by uid."""
    return {board.uid: board.to_json() for board in all_dashboards(tenant_id)}


def export(directory: Path, sources: Sources, tenant_id: int) -> list[Path]:
    """Write Grafana provisioning files into ``directory``; returns the files written."""
    boards = directory / "dashboards"
    datasources = directory / "provisioning" / "datasources"
    providers = directory / "provisioning" / "dashboards"
    for folder in (boards, datasources, providers):
        folder.mkdir(parents=True, exist_ok=True)
    written = []
    for uid, board in dashboards_json(tenant_id).items():
        path = boards / f"{uid}.json"
        path.write_text(json.dumps(board, indent=2, sort_keys=True) + "\n")
        written.append(path)
    path = datasources / "tierscope.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": 1, "datasources": sources.datasources()}, sort_keys=False))
    path.chmod(0o600)  # it holds the database password
    written.append(path)
    provider = {
        "apiVersion": 1,
        "providers": [
            {
                "name": "tierscope",
                "folder": FOLDER_TITLE,
                "folderUid": FOLDER_UID,
                "type": "file",
                "allowUiUpdates": False,
                "options": {"path": str(boards.resolve())},
            }
        ],
    }
    path = providers / "tierscope.yaml"
    path.write_text(yaml.safe_dump(provider, sort_keys=False))
    written.append(path)
    return written


GENERATED = Path(__file__).parent / "generated"


def write_generated(directory: Path = GENERATED) -> list[Path]:
    """The dashboards' JSON as committed in the repository (for the default
    tenant, id 1), so reviews show what a change does to them; a test fails when
    these files and the code disagree (``make dashboards`` rewrites them)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for uid, board in dashboards_json(1).items():
        path = directory / f"{uid}.json"
        path.write_text(json.dumps(board, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
