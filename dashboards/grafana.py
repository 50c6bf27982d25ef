"""A small model of Grafana's dashboard JSON (schema version 39, Grafana 10.4).

Only what tierscope's dashboards use: rows, time series, stat, bar gauge and
table panels, template variables and datasource references. Panels are laid
out left to right on Grafana's 24-column grid. Everything serializes to plain
dicts, so a generated dashboard is ordinary JSON that Grafana imports as is;
the tests load every one into Grafana's own dashboard model (the
grafana-foundation-sdk package) and check that nothing is lost on the way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 39
GRID_WIDTH = 24

POSTGRES = {"type": "grafana-postgresql-datasource", "uid": "tierscope-postgres"}
PROMETHEUS = {"type": "prometheus", "uid": "tierscope-prometheus"}


@dataclass
class Target:
    """One query of a panel: SQL for PostgreSQL, PromQL for Prometheus."""

    query: str
    ref_id: str = "A"
    legend: str | None = None
    table: bool = False  # SQL: the result is a table, not time series

    def for_datasource(self, datasource: dict[str, str]) -> dict[str, Any]:
        if datasource is PROMETHEUS:
            target: dict[str, Any] = {"refId": self.ref_id, "datasource": datasource, "expr": self.query}
            if self.legend:
                target["legendFormat"] = self.legend
            return target
        return {
            "refId": self.ref_id,
            "datasource": datasource,
            "editorMode": "code",
            "format": "table" if self.table else "time_series",
            "rawQuery": True,
            "rawSql": self.query,
        }


@dataclass
class Panel:
    title: str
    kind: str  # timeseries, stat, bargauge, table
    targets: list[Target]
    datasource: dict[str, str] = field(default_factory=lambda: POSTGRES)
    width: int = 12
    height: int = 8
    unit: str | None = None
    description: str = ""
    stacked: bool = False
    thresholds: list[tuple[float, str]] | None = None  # (from value, colour), ascending

    def to_json(self, panel_id: int, x: int, y: int) -> dict[str, Any]:
        defaults: dict[str, Any] = {}
        if self.unit:
            defaults["unit"] = self.unit
        if self.thresholds:
            steps = [{"color": "green", "value": None}]
            steps += [{"color": colour, "value": value} for value, colour in self.thresholds]
            defaults["thresholds"] = {"mode": "absolute", "steps": steps}
        if self.stacked:
            defaults["custom"] = {"stacking": {"mode": "normal", "group": "A"}, "fillOpacity": 60}
        return {
            "id": panel_id,
            "type": self.kind,
            "title": self.title,
            "description": self.description,
            "datasource": self.datasource,
            "gridPos": {"x": x, "y": y, "w": self.width, "h": self.height},
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {},
            "targets": [t.for_datasource(self.datasource) for t in self.targets],
        }


@dataclass
class Row:
    title: str
    panels: list[Panel]


@dataclass
class Variable:
    """A template variable: a SQL query's values, or a constant set when the
    dashboard is generated (the tenant)."""

    name: str
    label: str
    query: str | None = None  # SQL; None: a constant
    value: str = ""
    hidden: bool = False

    def to_json(self) -> dict[str, Any]:
        if self.query is None:
            return {
                "type": "constant",
                "name": self.name,
                "label": self.label,
                "query": self.value,
                "hide": 2,
                "current": {"text": self.value, "value": self.value},
            }
        return {
            "type": "query",
            "name": self.name,
            "label": self.label,
            "datasource": POSTGRES,
            "query": self.query,  # no "definition": Grafana fills it in; its dashboard model lacks it
            "refresh": 2,  # on time range change
            "sort": 1,
            "includeAll": False,
            "multi": False,
            "hide": 2 if self.hidden else 0,
        }


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    rows: list[Row]
    variables: list[Variable] = field(default_factory=list)
    tags: tuple[str, ...] = ("tierscope",)
    time_from: str = "now-6h"
    refresh: str = "1m"

    def panels(self) -> list[Panel]:
        return [panel for row in self.rows for panel in row.panels]

    def to_json(self) -> dict[str, Any]:
        laid_out: list[dict[str, Any]] = []
        panel_id, y = 1, 0
        for row in self.rows:
            laid_out.append(
                {
                    "id": panel_id,
                    "type": "row",
                    "title": row.title,
                    "collapsed": False,
                    "gridPos": {"x": 0, "y": y, "w": GRID_WIDTH, "h": 1},
                    "panels": [],
                }
            )
            panel_id, y, x, line_height = panel_id + 1, y + 1, 0, 0
            for panel in row.panels:
                if x + panel.width > GRID_WIDTH:
                    x, y, line_height = 0, y + line_height, 0
                laid_out.append(panel.to_json(panel_id, x, y))
                panel_id, x, line_height = panel_id + 1, x + panel.width, max(line_height, panel.height)
            y += line_height
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": list(self.tags),
            "timezone": "browser",
            "schemaVersion": SCHEMA_VERSION,
            "editable": True,
            "graphTooltip": 1,
            "refresh": self.refresh,
            "time": {"from": self.time_from, "to": "now"},
            "templating": {"list": [v.to_json() for v in self.variables]},
            "annotations": {"list": []},
            "panels": laid_out,
        }
