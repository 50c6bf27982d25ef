"""``tierscope alerts``: list ranked alerts, acknowledge one, silence some, apply rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import psycopg
from rich import box
from rich.table import Table
from rich.text import Text

from tierscope.cli.main import _settings, _tenant_id, _with_store, console, data_dir_option, main, out

tenant_option = click.option("--tenant", default="default", show_default=True, help="The tenant.")


@main.group()
def alerts() -> None:
    """Alerts: what fires, where the fault is, who is affected."""


@alerts.command("list")
@tenant_option
@click.option("--since", default="24h", show_default=True, help="Also show alerts resolved this recently.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the API's shape).")
@data_dir_option
def alerts_list(tenant: str, since: str, as_json: bool, data_dir: Path | None) -> None:
    """Open alerts first, ranked by priority, then recently resolved ones."""
    from tierscope.alerting import views
    from tierscope.config import parse_duration
    from tierscope.store import alerting as store

    try:
        start = datetime.now(UTC) - parse_duration(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None

    async def work(conn: psycopg.AsyncConnection) -> list[dict[str, Any]]:
        return await store.list_alerts(conn, await _tenant_id(conn, tenant), start)

    settings = _settings(data_dir=data_dir)
    shown = views.rank([views.view(row, settings.alert_runbook_url) for row in _with_store(settings, work)])
    if as_json:
        out.print_json(json.dumps({"alerts": shown}))
        return
    if not shown:
        console.print(f"no alerts for tenant {tenant!r} in the last {since}")
        return
    # Fits an 80-column terminal: the short columns never wrap or shrink (an
    # on-call engineer must read "acknowledged" whole); the title, where the
    # fault is and whom it hurts share the one column that wraps. Rows come
    # ranked by priority, highest first.
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("id", no_wrap=True, justify="right")
    table.add_column("severity", no_wrap=True, min_width=len("critical"))
    table.add_column("state", no_wrap=True, min_width=len("acknowledged"))
    table.add_column("started", no_wrap=True, min_width=len("12-31 23:59"))
    table.add_column("alert · where · impact", ratio=1, overflow="fold")
    for alert in shown:
        where = "/".join(part for part in (alert["tier"], alert["component"]) if part) or "-"
        impact = alert["impact"]
        detail = f"{where} · {impact.get('users', '-')} users · priority {impact.get('priority', '-')}"
        table.add_row(
            str(alert["id"]),
            alert["severity"],
            alert["state"],
            (alert["started_at"] or "")[5:16].replace("T", " ") or "-",  # month-day hour:minute, UTC
            Text(alert["title"]).append(f"\n{detail}", style="dim"),
        )
    out.print(table)


@alerts.command("ack")
@click.argument("alert_id", type=int)
@tenant_option
@click.option("--by", default="", help="Who takes it in hand.")
@data_dir_option
def alerts_ack(alert_id: int, tenant: str, by: str, data_dir: Path | None) -> None:
    """Acknowledge a firing alert."""
    from tierscope.store import alerting as store

    async def work(conn: psycopg.AsyncConnection) -> tuple[bool, dict[str, Any] | None]:
        tenant_id = await _tenant_id(conn, tenant)
        done = await store.acknowledge(conn, tenant_id, alert_id, by, datetime.now(UTC))
        return done, await store.get_alert(conn, tenant_id, alert_id)

    done, row = _with_store(_settings(data_dir=data_dir), work)
    if row is None:
        raise click.ClickException(f"no alert {alert_id} for tenant {tenant!r}")
    if not done and row["state"] != "acknowledged":
        raise click.ClickException(
            f"alert {alert_id} is {row['state']}; only a firing alert can be acknowledged"
        )
    console.print(f"alert {alert_id} acknowledged")


@alerts.command("silence")
@tenant_option
@click.option(
    "--match",
    "matchers",
    multiple=True,
    metavar="LABEL=VALUE",
    help="Mute alerts with this label (severity, service, bt, tier, component, rule, kind, "
    "business_service); repeat to require several.",
)
@click.option("--duration", default="1h", show_default=True, help="How long the silence lasts.")
@click.option("--comment", default="", help="Why.")
@click.option("--maintenance", is_flag=True, help="A maintenance window rather than a silence.")
@click.option("--list", "listing", is_flag=True, help="List the silences that have not ended.")
@click.option("--expire", type=int, default=None, metavar="ID", help="End silence ID now.")
@data_dir_option
def alerts_silence(
    tenant: str,
    matchers: tuple[str, ...],
    duration: str,
    comment: str,
    maintenance: bool,
    listing: bool,
    expire: int | None,
    data_dir: Path | None,
) -> None:
    """Mute matching alerts for a while (or list or end silences)."""
    from tierscope.alerting import mute
    from tierscope.config import parse_duration
    from tierscope.store import alerting as store

    now = datetime.now(UTC)
    silence: dict[str, Any] | None = None
    if not listing and expire is None:
        if not matchers:
            raise click.UsageError("give at least one --match LABEL=VALUE (or --list, or --expire ID)")
        pairs = dict(m.split("=", 1) for m in matchers if "=" in m)
        if len(pairs) != len(matchers):
            raise click.BadParameter("use LABEL=VALUE", param_hint="--match")
        try:
            mute.check_matchers(pairs)
            length = parse_duration(duration)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
        silence = {
            "kind": "maintenance" if maintenance else "silence",
            "matchers": pairs,
            "starts_at": now,
            "ends_at": now + max(length, timedelta(seconds=1)),
            "comment": comment,
            "created_by": "cli",
        }

    async def work(conn: psycopg.AsyncConnection) -> Any:
        tenant_id = await _tenant_id(conn, tenant)
        if expire is not None:
            return await store.delete_silence(conn, tenant_id, expire)
        if silence is not None:
            return await store.create_silence(conn, tenant_id, silence)
        return await store.list_silences(conn, tenant_id, now)

    result = _with_store(_settings(data_dir=data_dir), work)
    if expire is not None:
        if not result:
            raise click.ClickException(f"no silence {expire} for tenant {tenant!r}")
        console.print(f"silence {expire} ended")
    elif silence is not None:
        console.print(
            f"silence {result} mutes {silence['matchers']} until {silence['ends_at']:%Y-%m-%d %H:%M} UTC"
        )
    else:
        table = Table("id", "kind", "matchers", "from", "until", "comment")
        for row in result:
            table.add_row(
                str(row["id"]),
                row["kind"],
                json.dumps(row["matchers"]),
                f"{row['starts_at']:%Y-%m-%d %H:%M}",
                f"{row['ends_at']:%Y-%m-%d %H:%M}",
                row["comment"],
            )
        out.print(table)


@alerts.command("apply")
@click.argument("path", metavar="FILE", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@tenant_option
@data_dir_option
def alerts_apply(path: Path, tenant: str, data_dir: Path | None) -> None:
    """Check FILE (the alerting YAML: rules, receivers, routes, costs) and store it."""
    import yaml

    from tierscope.alerting import rules, ssrf
    from tierscope.store import alerting as store

    text = path.read_text()
    try:
        config = rules.parse(text)
    except rules.ConfigError as exc:
        raise click.ClickException(f"{path}: {exc}; nothing was applied") from None
    settings = _settings(data_dir=data_dir)
    try:
        ssrf.check_receivers(config.receivers, settings.alert_allowed_networks)
    except ssrf.UnsafeAddress as exc:
        raise click.ClickException(f"{exc}; nothing was applied") from None

    async def work(conn: psycopg.AsyncConnection) -> None:
        await store.save_config(conn, await _tenant_id(conn, tenant), yaml.safe_load(text) or {}, str(path))

    _with_store(settings, work)
    console.print(
        f"applied {len(config.rules)} rule(s) and {len(config.receivers)} receiver(s) to tenant {tenant!r}"
    )
