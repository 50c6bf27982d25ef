"""``tierscope demo``: the demo estate, and its faults.

``tierscope demo`` runs the collector with the estate beside it (see
``docs/demo.md``); ``tierscope demo faults`` and ``tierscope demo fault NAME``
find the running estate through ``<data-dir>/demo/estate.json``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import httpx

from tierscope.cli.main import _settings, _store_errors, console, data_dir_option, main, out
from tierscope.config import parse_duration

port_option = click.option("--port", type=int, default=None, help="The collector's port (default 4318).")


@main.group(invoke_without_command=True)
@click.option("--host", default=None, help="Address the collector listens on (default 127.0.0.1).")
@port_option
@data_dir_option
@click.option(
    "--users",
    type=click.IntRange(1, 500),
    default=12,
    show_default=True,
    help="Simulated HTTP users (the default leaves room for the platform on 2 cores); "
    "--browsers come on top of them.",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Makes the users' choices reproducible.")
@click.option(
    "--minutes",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Stop by itself after this many minutes.",
)
@click.option(
    "--compress",
    type=click.FloatRange(0, 10_000),
    default=24.0,
    show_default=True,
    help="How much faster the simulated business day runs (24: a day per hour; 0: flat load).",
)
@click.option(
    "--think",
    type=click.FloatRange(0.05, 600),
    default=2.0,
    show_default=True,
    help="A user's mean think time between actions, in seconds, at an ordinary busy hour.",
)
@click.option(
    "--browsers",
    type=click.IntRange(0, 4),
    default=2,
    show_default=True,
    help="Browser users on top of --users: real headless Chromium sessions (Debian's chromium; 0: none).",
)
@click.option(
    "--history",
    type=click.FloatRange(0, 90),
    default=0,
    show_default=True,
    metavar="DAYS",
    help="First backfill this many days of past business (rollups), so baselines and SLOs have data.",
)
@click.pass_context
def demo(
    ctx: click.Context,
    host: str | None,
    port: int | None,
    data_dir: Path | None,
    users: int,
    seed: int,
    minutes: float | None,
    compress: float,
    think: float,
    browsers: int,
    history: float,
) -> None:
    """Run the demo estate: a CRM and an ERP under simulated users, monitored by
    tierscope (the collector and its embedded database included)."""
    if ctx.invoked_subcommand is not None:
        return
    try:
        import flask  # noqa: F401
        import gunicorn  # noqa: F401
    except ImportError:
        raise click.ClickException("the demo needs its extra: pip install 'tierscope[demo]'") from None
    from tierscope.collector.server import CollectorError
    from tierscope.demo.estate import DemoError, Options, run

    settings = _settings(host=host, port=port, data_dir=data_dir)
    options = Options(
        users=users,
        seed=seed,
        minutes=minutes,
        compress=compress,
        think=think,
        browsers=browsers,
        history=history,
    )
    with _store_errors():
        try:
            run(settings, options, console)
        except (CollectorError, DemoError) as exc:
            raise click.ClickException(str(exc)) from None


def _running(data_dir: Path | None, port: int | None) -> dict[str, Any]:
    settings = _settings(data_dir=data_dir, port=port)
    path = settings.data_dir / "demo" / "estate.json"
    try:
        state = dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        raise click.ClickException(f"no demo is running with data directory {settings.data_dir}") from None
    if not state["collector_url"].endswith(f":{settings.port}"):
        raise click.ClickException(
            f"the demo in {settings.data_dir} runs its collector at {state['collector_url']}, "
            f"not on port {settings.port}"
        )
    return state


@demo.command("faults")
@port_option
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def demo_faults(port: int | None, data_dir: Path | None, as_json: bool) -> None:
    """List the faults of the running demo, with the tier and component each hits."""
    from rich.table import Table

    state = _running(data_dir, port)
    with _control_errors():
        faults = httpx.get(f"{state['control_url']}/faults", timeout=10).json()["faults"]
    if as_json:
        out.print_json(json.dumps(faults))
        return
    table = Table("fault", "tier", "component", "affects", "on until")
    for fault in faults:
        affects = ", ".join(fault["affected_bts"]) or f"site {fault['site']}"
        until = fault["active_until"]
        table.add_row(
            fault["fault"], fault["tier"], fault["component"], affects, _clock(until) if until else ""
        )
    out.print(table)


@demo.command("fault")
@click.argument("name")
@click.option("--for", "duration", default="5m", show_default=True, help="How long: 90s, 5m, 1h.")
@port_option
@data_dir_option
def demo_fault(name: str, duration: str, port: int | None, data_dir: Path | None) -> None:
    """Switch fault NAME on in the running demo for a while."""
    try:
        seconds = parse_duration(duration).total_seconds()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--for") from None
    state = _running(data_dir, port)
    with _control_errors():
        response = httpx.post(f"{state['control_url']}/faults/{name}", params={"for": seconds}, timeout=30)
    body = response.json()
    if response.status_code != 200:
        raise click.ClickException(body.get("error", response.text))
    console.print(f"{name} is on until {_clock(body['until'])} (tier {body['tier']}, {body['component']})")
    if body.get("busy_again_in_s"):
        # Quiet hours: the alert rules' minimum traffic holds most transactions back.
        console.print(
            f"[yellow]note[/]: it is {body['business_time']} in the demo's business week, traffic at "
            f"{body['load_factor']:.0%} of a busy hour: transactions with too few requests in a rule's "
            f"window are not judged, so the alert may wait until the business is busy again, in about "
            f"{body['busy_again_in_s'] / 60:.0f} min (docs/alerting.md)."
        )


def _clock(unix: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(unix).astimezone().strftime("%H:%M:%S")


@contextlib.contextmanager
def _control_errors() -> Iterator[None]:
    try:
        yield
    except httpx.HTTPError as exc:
        raise click.ClickException(f"the running demo does not answer: {exc}") from None
