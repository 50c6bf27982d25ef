"""``tierscope rum``: which pages may send beacons, and which client IP ranges are which site."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from urllib.parse import urlsplit

import click
import psycopg

from tierscope.cli.main import _settings, _tenant_id, _with_store, console, data_dir_option, main

tenant_option = click.option("--tenant", default="default", show_default=True, help="The tenant.")


@main.group()
def rum() -> None:
    """Real-user monitoring: allowed page origins and sites."""


def _origin(text: str) -> str:
    if text == "*":
        return text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise click.BadParameter(
            f"{text!r} is not an origin such as https://erp.example.com", param_hint="ORIGIN"
        )
    return f"{parts.scheme}://{parts.netloc}".lower()


@rum.command("origins")
@click.argument("origins", nargs=-1, metavar="ORIGIN...")
@tenant_option
@data_dir_option
def rum_origins(origins: tuple[str, ...], tenant: str, data_dir: Path | None) -> None:
    """Allow exactly these page ORIGINs (https://erp.example.com, or * for any) to send
    beacons with the tenant's RUM key; none given: allow none."""
    from tierscope.store import rum as rum_store

    checked = [_origin(o) for o in origins]

    async def work(conn: psycopg.AsyncConnection) -> None:
        await rum_store.set_origins(conn, await _tenant_id(conn, tenant), checked)

    _with_store(_settings(data_dir=data_dir), work)
    console.print(f"tenant {tenant!r} accepts beacons from: {', '.join(checked) or 'no origin'}")


@rum.command("site")
@click.argument("network", metavar="CIDR")
@click.argument("site")
@tenant_option
@data_dir_option
def rum_site(network: str, site: str, tenant: str, data_dir: Path | None) -> None:
    """Name the SITE of clients in the IP range CIDR (10.20.0.0/16 branch-b); the most
    specific range wins, and a site the page sets wins over both."""
    from tierscope.store import rum as rum_store

    try:
        ipaddress.ip_network(network, strict=False)
    except ValueError:
        raise click.BadParameter(f"{network!r} is not an IP range such as 10.20.0.0/16") from None
    if not 0 < len(site) <= 128:
        raise click.BadParameter("a site name has 1 to 128 characters")

    async def work(conn: psycopg.AsyncConnection) -> None:
        await rum_store.set_site(conn, await _tenant_id(conn, tenant), network, site)

    _with_store(_settings(data_dir=data_dir), work)
    console.print(f"clients of tenant {tenant!r} in {network} are site {site!r}")
