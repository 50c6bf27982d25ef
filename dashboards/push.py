"""``tierscope dashboards push``: the folder, datasources and dashboards,
through Grafana's HTTP API, with ``grafana-client`` (the maintained successor of
the ``grafana-api`` package).

Pushing is idempotent: the folder and datasources are created when missing and
updated otherwise (by uid), dashboards are saved with ``overwrite`` — pushing
twice leaves Grafana as pushing once, with one more dashboard version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError

from tierscope.dashboards.provision import FOLDER_TITLE, FOLDER_UID, Sources, dashboards_json


@dataclass
class PushReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    dashboards: dict[str, str] = field(default_factory=dict)  # uid -> URL in Grafana


def _missing(error: GrafanaClientError) -> bool:
    return getattr(error, "status_code", None) == 404


def push(api: GrafanaApi, sources: Sources, tenant_id: int) -> PushReport:
    report = PushReport()
    try:
        api.folder.get_folder(FOLDER_UID)
    except GrafanaClientError as error:
        if not _missing(error):
            raise
        api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)
        report.created.append(f"folder {FOLDER_TITLE}")
    for source in sources.datasources():
        _save_datasource(api, source, report)
    for uid, board in dashboards_json(tenant_id).items():
        saved: dict[str, Any] = api.dashboard.update_dashboard(
            {
                "dashboard": {**board, "id": None},
                "folderUid": FOLDER_UID,
                "overwrite": True,
                "message": "tierscope dashboards push",
            }
        )
        report.dashboards[uid] = str(saved.get("url", ""))
    return report


def _save_datasource(api: GrafanaApi, source: dict[str, Any], report: PushReport) -> None:
    try:
        api.datasource.get_datasource_by_uid(source["uid"])
    except GrafanaClientError as error:
        if not _missing(error):
            raise
        api.datasource.create_datasource(source)
        report.created.append(f"datasource {source['name']}")
        return
    api.datasource.update_datasource_by_uid(source["uid"], source)
    report.updated.append(f"datasource {source['name']}")
