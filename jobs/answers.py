"""The answers of the single-tenant commands and endpoints, in the shapes keybuzz-backend's callers
know (`POST /api/v1/tenants/sync`, `sync-all`, `GET /api/v1/tenants/status/:tenantId`), built from
the domain results of reconcile.single and the run report. The CLI and the HTTP server both use
them, so both answer alike."""

from __future__ import annotations

from typing import Any

from reconcile.actions import ARCHIVE, CONFLICTS, CREATE, ERROR, ORPHAN, UPDATE
from reconcile.report.model import SUCCESS, Report
from reconcile.single import NOT_FOUND, SyncOutcome, TenantStatus


def failure(error: str) -> dict[str, Any]:
    return {"success": False, "error": error}


def not_found() -> dict[str, Any]:
    return failure(NOT_FOUND)


def sync_answer(outcome: SyncOutcome) -> dict[str, Any]:
    """{success, tenant{id,name,plan,status}, inboundAddress}, plus `error` when it did not succeed."""
    if not outcome.completed:
        return failure(outcome.report.error or outcome.report.status)
    body: dict[str, Any] = {"success": outcome.succeeded, "tenant": outcome.tenant,
                            "inboundAddress": outcome.inbound_address}
    if outcome.problems:
        body["error"] = "; ".join(f"{p['error']}: {p['detail']}" for p in outcome.problems)
    return body


def _side(row: Any) -> dict[str, Any]:
    if row is None:
        return {"exists": False, "name": None, "plan": None, "status": None}
    return {"exists": True, "name": row.name, "plan": row.plan, "status": row.status}


def status_answer(status: TenantStatus) -> dict[str, Any]:
    """The status JSON: both rows as stored, `inSync`, the inbound addresses and marketplace
    connections, and `differences` in marketplace terms."""
    return {
        "tenantId": status.tenant_id,
        "product": _side(status.product),
        "marketplace": _side(status.marketplace),
        "inSync": status.in_sync,
        "inboundAddresses": status.inbound_addresses,
        "marketplaceConnections": status.marketplace_connections,
        "differences": status.differences,
    }


def sync_all_answer(report: Report, unchanged: list[str]) -> dict[str, Any]:
    """A whole run as `sync-all` answers: the ids per outcome (`skipped` = unchanged, as callers of
    sync-all know it), the exact counts, and whether a list was cut."""
    body = report.as_dict()
    results = {
        CREATE.counted_as: body[CREATE.counted_as],
        UPDATE.counted_as: [u["id"] for u in body[UPDATE.counted_as]],
        "skipped": unchanged,
        ERROR.counted_as: body[ERROR.counted_as],
        ARCHIVE.counted_as: body[ARCHIVE.counted_as],
        ORPHAN.counted_as: body[ORPHAN.counted_as],
        CONFLICTS: body[CONFLICTS],
    }
    return {"success": report.status == SUCCESS, "total": report.total, "results": results,
            "counts": body["counts"], "truncated": body["truncated"] or len(unchanged) < body["counts"]["unchanged"],
            "runId": report.run_id, "status": report.status}
