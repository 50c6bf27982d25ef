"""``tierscope dashboards``: Grafana dashboards as code, pushed or exported."""

from __future__ import annotations

from pathlib import Path

import click
import psycopg
from psycopg.conninfo import make_conninfo

from tierscope.cli.main import _settings, _tenant_id, _with_store, console, data_dir_option, main

tenant_option = click.option("--tenant", default="default", show_default=True, help="The tenant.")
datasource_option = click.option(
    "--database-url",
    "datasource_url",
    default=None,
    help="How Grafana reaches the store (default: as this command does; better a read-only role).",
)
prometheus_option = click.option(
    "--prometheus-url", default=None, help="A Prometheus scraping the collectors' /metrics (platform panels)."
)


def _sources(tenant: str, datasource_url: str | None, prometheus_url: str | None, data_dir: Path | None):
    from tierscope.dashboards.provision import Sources

    async def work(conn: psycopg.AsyncConnection) -> tuple[int, str]:
        info = conn.info
        own = make_conninfo(
            host=info.host, port=info.port, user=info.user, password=info.password, dbname=info.dbname
        )
        return await _tenant_id(conn, tenant), own

    tenant_id, own_url = _with_store(_settings(data_dir=data_dir), work)
    return tenant_id, Sources(datasource_url or own_url, prometheus_url)


@main.group()
def dashboards() -> None:
    """Grafana dashboards: push them to a Grafana, or export provisioning files."""


@dashboards.command("push")
@click.option("--grafana-url", required=True, help="Grafana's address, e.g. http://grafana:3000")
@click.option("--token", required=True, envvar="GRAFANA_TOKEN", help="A Grafana service-account token.")
@tenant_option
@datasource_option
@prometheus_option
@data_dir_option
def dashboards_push(
    grafana_url: str,
    token: str,
    tenant: str,
    datasource_url: str | None,
    prometheus_url: str | None,
    data_dir: Path | None,
) -> None:
    """Create or update the tierscope folder, datasources and dashboards in Grafana."""
    from grafana_client import GrafanaApi
    from grafana_client.client import GrafanaException

    from tierscope.dashboards.push import push

    tenant_id, sources = _sources(tenant, datasource_url, prometheus_url, data_dir)
    api = GrafanaApi.from_url(grafana_url, credential=token, timeout=10)
    try:
        report = push(api, sources, tenant_id)
    except GrafanaException as exc:
        status = getattr(exc, "status_code", None)
        hint = " (check --token: a service-account token with Editor or Admin role)" if status == 401 else ""
        raise click.ClickException(f"Grafana at {grafana_url} refused: {exc}{hint}") from None
    for item in report.created:
        console.print(f"created {item}")
    for item in report.updated:
        console.print(f"updated {item}")
    for uid, url in report.dashboards.items():
        console.print(f"dashboard {uid}: {grafana_url.rstrip('/')}{url}")


@dashboards.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@tenant_option
@datasource_option
@prometheus_option
@data_dir_option
def dashboards_export(
    directory: Path,
    tenant: str,
    datasource_url: str | None,
    prometheus_url: str | None,
    data_dir: Path | None,
) -> None:
    """Write Grafana file provisioning (datasources, dashboard provider, dashboard JSON) into DIRECTORY."""
    from tierscope.dashboards.provision import export

    tenant_id, sources = _sources(tenant, datasource_url, prometheus_url, data_dir)
    for path in export(directory, sources, tenant_id):
        console.print(f"wrote {path}")
    console.print(f"point Grafana's paths.provisioning at {directory / 'provisioning'}")


@main.command("report")
@click.option("--period", required=True, help="A month (2026-10) or an ISO week (2026-W43), in UTC.")
@click.option("--service", default=None, help="Only this service's transactions and SLOs.")
@click.option(
    "--format", "kind", type=click.Choice(["html", "pdf"]), default=None, help="Default: from --out."
)
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The file to write."
)
@tenant_option
@data_dir_option
def report(
    period: str, service: str | None, kind: str | None, out: Path, tenant: str, data_dir: Path | None
) -> None:
    """The SLA trend report for business managers: compliance, budgets, transactions, sites."""
    from tierscope.dashboards import render
    from tierscope.dashboards.report import gather, parse_period

    try:
        chosen = parse_period(period)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--period") from None
    kind = kind or ("pdf" if out.suffix.lower() == ".pdf" else "html")

    async def work(conn: psycopg.AsyncConnection):
        return await gather(conn, await _tenant_id(conn, tenant), tenant, chosen, service)

    with console.status(f"reading {chosen.label} and the periods before it"):
        figures = _with_store(_settings(data_dir=data_dir), work)
    with console.status(f"writing the {kind.upper()}"):
        if kind == "pdf":
            out.write_bytes(render.pdf(figures))
        else:
            out.write_text(render.html(figures))
    met = sum(1 for c in figures.compliance if c.met)
    console.print(f"wrote {out}: {chosen.label}, {met} of {len(figures.compliance)} objectives met")
