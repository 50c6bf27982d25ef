"""``tierscope slo``: apply SLO files, list what is applied, show where each SLO stands."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import psycopg
from rich.table import Table

from tierscope.cli.main import _settings, _tenant_id, _with_store, console, data_dir_option, main, out

tenant_option = click.option("--tenant", default="default", show_default=True, help="The tenant.")


@main.group()
def slo() -> None:
    """Service level objectives: definitions, budgets, burn rates."""


@slo.command("apply")
@click.argument("path", metavar="FILE", type=click.Path(exists=True, path_type=Path))
@tenant_option
@click.option("--prune", is_flag=True, help="Also remove the tenant's SLOs and services not in FILE.")
@data_dir_option
def slo_apply(path: Path, tenant: str, prune: bool, data_dir: Path | None) -> None:
    """Check FILE (YAML, or a directory of YAML files) and store its SLOs, business services
    and business calendar."""
    from tierscope.slo import definitions
    from tierscope.store import slo as slo_store

    async def work(conn: psycopg.AsyncConnection) -> definitions.Definitions:
        tenant_id = await _tenant_id(conn, tenant)
        known = (
            [] if prune else [row["name"] for row in await slo_store.list_business_services(conn, tenant_id)]
        )
        try:
            found = definitions.load(path, known_services=known)
        except definitions.DefinitionError as exc:
            raise click.ClickException(f"{path} has problems; nothing was applied:\n{exc}") from None
        await slo_store.save(
            conn,
            tenant_id,
            [(s.metadata.name, s.model_dump(mode="json"), str(path)) for s in found.slos],
            [
                (s.metadata.name, s.spec.criticality, s.model_dump(mode="json"), str(path))
                for s in found.services
            ],
            calendar=(found.calendar.model_dump(mode="json"), str(path)) if found.calendar else None,
            prune=prune,
        )
        return found

    found = _with_store(_settings(data_dir=data_dir), work)
    calendar = " and a business calendar" if found.calendar else ""
    console.print(
        f"applied {len(found.slos)} SLO(s) and {len(found.services)} business service(s){calendar} "
        f"from {path} to tenant {tenant!r}"
    )


@slo.command("list")
@tenant_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@data_dir_option
def slo_list(tenant: str, as_json: bool, data_dir: Path | None) -> None:
    """List the tenant's SLOs and business services as applied."""
    from tierscope.slo import status
    from tierscope.store import slo as slo_store

    async def work(conn: psycopg.AsyncConnection) -> tuple[list[Any], list[Any], Any]:
        tenant_id = await _tenant_id(conn, tenant)
        found = await status.objectives(conn, tenant_id)
        services = await slo_store.list_business_services(conn, tenant_id)
        return found, services, await slo_store.get_calendar(conn, tenant_id)

    found, stored_services, calendar = _with_store(_settings(data_dir=data_dir), work)
    rows = [_describe(o) for o in found]
    services = [
        {
            "name": row["name"],
            "criticality": row["criticality"],
            "transactions": [f"{t['service']} / {t['bt']}" for t in row["document"]["spec"]["transactions"]],
        }
        for row in stored_services
    ]
    if as_json:
        out.print_json(
            json.dumps(
                {"slos": rows, "business_services": services, "calendar": calendar and calendar["spec"]}
            )
        )
        return
    table = Table("id", "subject", "objective", "target", "window", "criticality", title=f"SLOs of {tenant}")
    for row in rows:
        table.add_row(
            row["id"],
            row["subject"],
            row["objective"],
            f"{row['target']:.3%}",
            row["window"],
            row["criticality"],
        )
    if services:
        groups = Table(
            "business service", "criticality", "transactions", title=f"business services of {tenant}"
        )
        for service in services:
            groups.add_row(service["name"], service["criticality"], "\n".join(service["transactions"]))
        out.print(groups)
    out.print(table if rows else f"tenant {tenant!r} has no SLOs; see tierscope slo apply")


def _describe(objective: Any) -> dict[str, Any]:
    spec = objective.document.spec
    window = spec.timeWindow
    kind = f"rolling {window.duration}" if window.isRolling else f"{window.kind} ({window.time_zone})"
    subject = spec.businessService or f"{spec.service} / {spec.bt}"
    what = spec.objective if spec.threshold is None else f"latency <= {spec.threshold}"
    return {
        "id": objective.name,
        "subject": subject,
        "objective": what,
        "target": spec.target,
        "window": kind,
        "criticality": objective.criticality or "",
    }


@slo.command("status")
@tenant_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON (as GET /api/v1/slos).")
@data_dir_option
def slo_status(tenant: str, as_json: bool, data_dir: Path | None) -> None:
    """Where each SLO stands now: SLI, budget left, burn rates, who owns the bad events."""
    from tierscope.slo import status

    async def work(conn: psycopg.AsyncConnection) -> list[dict[str, Any]]:
        tenant_id = await _tenant_id(conn, tenant)
        now = datetime.now(UTC)
        return [
            await status.evaluate(conn, tenant_id, o, now) for o in await status.objectives(conn, tenant_id)
        ]

    results = _with_store(_settings(data_dir=data_dir), work)
    if as_json:
        out.print_json(json.dumps({"slos": results}))
        return
    table = Table("id", "counts", "target", "SLI", "budget left", "burn 1h", "burn 6h", "burn 3d", "owned by")
    for r in results:
        burns = r["burn_rates"]
        # As users feel it, the summary names sites too ("the network to branch-b").
        owners = r.get("attribution_summary") or ", ".join(
            f"{k} {v:.0%}" for k, v in list(r["attribution"].items())[:3]
        )
        table.add_row(
            r["id"],
            {"rum": "user actions", "mixed": "actions+requests"}.get(r.get("sli_source", ""), "requests"),
            f"{r['target']:.3%}",
            "-" if r["sli"] is None else f"{r['sli']:.3%}",
            "-" if r["error_budget_remaining"] is None else f"{r['error_budget_remaining']:.1%}",
            *("-" if burns[w] is None else f"{burns[w]:.2f}x" for w in ("1h", "6h", "3d")),
            owners,
        )
    out.print(table if results else f"tenant {tenant!r} has no SLOs; see tierscope slo apply")
