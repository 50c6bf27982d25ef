"""``tierscope report-schedule``: SLA reports e-mailed each week or month."""

from __future__ import annotations

import os
import re
from pathlib import Path

import click
import psycopg

from tierscope.cli.main import _settings, _tenant_id, _with_store, console, data_dir_option, main

tenant_option = click.option("--tenant", default="default", show_default=True, help="The tenant.")
_ADDRESS = re.compile(r"^[^@\s,<>]{1,64}@[^@\s,<>]{1,255}$")
MAX_RECIPIENTS = 50


def _address(value: str, option: str) -> str:
    if not _ADDRESS.match(value):
        raise click.BadParameter(
            f"{value!r} is not an e-mail address like manager@example.com", param_hint=option
        )
    return value


@main.group("report-schedule")
def report_schedule() -> None:
    """SLA reports sent by e-mail each week or month (tierscope up sends them)."""


@report_schedule.command("set")
@click.argument("name")
@click.option("--every", type=click.Choice(["week", "month"]), required=True, help="How often.")
@click.option("--to", "recipients", multiple=True, required=True, help="A recipient (repeat for more).")
@click.option("--service", default=None, help="Only this service's transactions and SLOs.")
@click.option("--smtp-host", required=True, help="The SMTP relay.")
@click.option("--smtp-port", type=click.IntRange(1, 65535), default=25, show_default=True)
@click.option("--sender", "--from", "sender", required=True, help="The From address.")
@click.option("--starttls/--no-starttls", default=False, show_default=True)
@click.option("--username", default=None, help="SMTP user (the password comes from --password-env).")
@click.option(
    "--password-env", default=None, help="The environment variable holding the SMTP password (never argv)."
)
@tenant_option
@data_dir_option
def set_schedule(
    name: str,
    every: str,
    recipients: tuple[str, ...],
    service: str | None,
    smtp_host: str,
    smtp_port: int,
    sender: str,
    starttls: bool,
    username: str | None,
    password_env: str | None,
    tenant: str,
    data_dir: Path | None,
) -> None:
    """Create or change the schedule NAME. Its first report is the last complete period."""
    from tierscope.store import report_schedules as store

    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", name):
        raise click.BadParameter("use 1 to 63 lower-case letters, digits and dashes", param_hint="NAME")
    if len(recipients) > MAX_RECIPIENTS:
        raise click.BadParameter(f"at most {MAX_RECIPIENTS} recipients", param_hint="--to")
    checked = [_address(r, "--to") for r in recipients]
    password = None
    if password_env:
        password = os.environ.get(password_env)
        if password is None:
            raise click.BadParameter(
                f"the environment variable {password_env} is not set", param_hint="--password-env"
            )
    smtp = {
        "host": smtp_host,
        "port": smtp_port,
        "sender": _address(sender, "--sender"),
        "starttls": starttls,
        "username": username,
        "password": password,
    }
    schedule = {"name": name, "every": every, "recipients": checked, "service": service, "smtp": smtp}

    async def work(conn: psycopg.AsyncConnection) -> None:
        await store.save(conn, await _tenant_id(conn, tenant), schedule)

    _with_store(_settings(data_dir=data_dir), work)
    console.print(
        f"report schedule {name}: every {every} to {', '.join(checked)} via {smtp_host}:{smtp_port}"
    )


@report_schedule.command("list")
@tenant_option
@data_dir_option
def list_schedules(tenant: str, data_dir: Path | None) -> None:
    """The tenant's schedules, the last period each sent and its last error."""
    from tierscope.store import report_schedules as store

    async def work(conn: psycopg.AsyncConnection) -> list[dict]:
        return await store.list_for(conn, await _tenant_id(conn, tenant))

    for row in _with_store(_settings(data_dir=data_dir), work):
        error = f" · last error: {row['last_error']}" if row["last_error"] else ""
        scope = f" ({row['service']})" if row["service"] else ""
        console.print(
            f"{row['name']}: every {row['every']} to {', '.join(row['recipients'])}{scope}"
            f" · last sent: {row['last_period'] or '-'}{error}",
            markup=False,
        )


@report_schedule.command("remove")
@click.argument("name")
@tenant_option
@data_dir_option
def remove_schedule(name: str, tenant: str, data_dir: Path | None) -> None:
    """Stop sending the schedule NAME."""
    from tierscope.store import report_schedules as store

    async def work(conn: psycopg.AsyncConnection) -> bool:
        return await store.remove(conn, await _tenant_id(conn, tenant), name)

    if not _with_store(_settings(data_dir=data_dir), work):
        raise click.ClickException(f"no report schedule named {name!r}")
    console.print(f"report schedule {name} removed")


@report_schedule.command("send-due")
@data_dir_option
def send_due(data_dir: Path | None) -> None:
    """Send every scheduled report whose period has ended (what tierscope up does each round)."""
    from tierscope.dashboards.schedule import send_due as send

    async def work(conn: psycopg.AsyncConnection) -> list[tuple[str, str, str]]:
        return await send(conn)

    sent = _with_store(_settings(data_dir=data_dir), work)
    for tenant, name, period in sent:
        console.print(f"sent {period} of {name} ({tenant})", markup=False)
    if not sent:
        console.print("nothing due")
