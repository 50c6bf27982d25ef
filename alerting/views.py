"""An alert as the API, the CLI and the notifiers show it (one shape for all)."""

from __future__ import annotations

from typing import Any

from tierscope.collector.api.deps import iso

RUNBOOK = "docs/runbook.md"
# One runbook section per kind of alert; a localised alert links its tier's section.
RUNBOOK_ANCHORS = {
    "slo_burn": "slo-burn-rate",
    "baseline": "baseline-deviation",
    "threshold": "static-threshold",
}


def runbook(kind: str, tier: str | None, base: str = RUNBOOK) -> str:
    anchor = f"tier-{tier}" if tier else RUNBOOK_ANCHORS.get(kind, "alerts")
    return f"{base}#{anchor}"


def view(row: dict[str, Any], base: str = RUNBOOK, severity_name: str | None = None) -> dict[str, Any]:
    """The API's alert object (docs/api.md) from a stored row."""
    started = row.get("started_at")
    return {
        "id": row["id"],
        "severity": row["severity"],
        "severity_name": severity_name or row["severity"],
        "state": row["state"],
        "title": row["title"],
        "service": row["service"],
        "bts": [list(pair) for pair in row["bts"]],
        "tier": row["tier"],
        "component": row["component"],
        "confidence": row["confidence"],
        "evidence": row["evidence"],
        "impact": row["impact"],
        "started_at": iso(started) if started else None,
        "resolved_at": iso(row["resolved_at"]) if row.get("resolved_at") else None,
        "pending_since": iso(row["pending_since"]),
        "acknowledged_by": row.get("acknowledged_by"),
        "rule": row["rule"],
        "kind": row["kind"],
        "group_key": row["group_key"],
        "tenant": str(row["tenant_id"]),
        "runbook": runbook(row["kind"], row["tier"], base),
        "link": f"/api/v1/alerts/{row['id']}",
    }


def rank(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Open alerts first, then by priority (highest first), then newest first."""
    order = {"firing": 0, "acknowledged": 1, "pending": 2, "resolved": 3}
    return sorted(
        alerts,
        key=lambda a: (order[a["state"]], -float(a["impact"].get("priority", 0)), -(a["id"])),
    )
