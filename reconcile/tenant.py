"""One tenant at a time: `sync` (the seed's POST /sync) and `status` (the seed's GET /status).

`sync` is a full run restricted to one id, so it shares the run's transaction, compare-and-set
and error rules; it takes the run lock *shared*, so syncs run side by side but never beside a
full run. `status` only reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from reconcile.cancel import Cancellation
from reconcile.db import DatabaseUrl, connect, engine_for, translate_db_errors
from reconcile.errors import DatabaseError, TenantNotFound
from reconcile.inbound import inbound_hook
from reconcile.mapping import ARCHIVED_MARK, CLOSED
from reconcile.reconciler import RunOptions, exit_code_of, run_reconcile
from reconcile.report import FAILED, LOCKED, PARTIAL, SUCCESS, Report, new_run_id
from reconcile.settings import Settings
from reconcile.shard import Shard

NOT_FOUND = "Tenant not found in product DB"


@dataclass
class SyncResult:
    body: dict[str, Any]  # the seed's response shape
    exit_code: int
    report: Report | None = None


def _engine(settings: Settings, db: DatabaseUrl) -> sa.Engine:
    return engine_for(db, connect_timeout_s=settings.connect_timeout_s,
                      statement_timeout_ms=settings.statement_timeout_ms, lock_timeout_ms=settings.lock_timeout_ms,
                      network_timeout_s=settings.network_timeout_s)


def _one(settings: Settings, db: DatabaseUrl, what: str, sql: str, params: dict[str, Any]) -> list[Any]:
    engine = _engine(settings, db)
    try:
        with connect(engine, db, retry_s=settings.connect_retry_s, what=what) as conn, \
                translate_db_errors(f"reading the {what} database failed", db):
            return list(conn.execute(sa.text(sql), params))
    finally:
        engine.dispose()


def _product_row(settings: Settings, tenant_id: str) -> Any:
    rows = _one(settings, settings.require_product(), "product",
                "SELECT id, name, plan, status FROM tenants WHERE id = :id", {"id": tenant_id})
    return rows[0] if rows else None


def sync_tenant(settings: Settings, tenant_id: str, country: str | None, log: Any,
                run_id: str | None = None, cancel: Cancellation | None = None) -> SyncResult:
    """Reconcile one tenant (create / update / archive) and, unless `country` is None, ensure its
    inbound address for that country. Raises TenantNotFound (exit 4) before any run."""
    settings = settings.with_overrides(shard=Shard())  # one tenant: shards do not apply
    run_id = run_id or new_run_id()
    report = Report(run_id=run_id, mode="apply", shard="0/1", id_limit=settings.report_id_limit)
    try:
        found = _product_row(settings, tenant_id)
    except DatabaseError as exc:  # like a failed run: a report, then the seed's error shape
        report.set_databases(settings.require_product(), settings.require_marketplace())
        report.fail(str(exc), exc.exit_code)
        report.emit(log.bind(tenant_id=tenant_id))
        return SyncResult({"success": False, "error": str(exc)}, exc.exit_code, report)
    if found is None:
        raise TenantNotFound(NOT_FOUND)
    hook = inbound_hook(settings, (country,)) if country else None
    report = run_reconcile(settings, RunOptions(tenant_id=tenant_id, after_write=hook, sync_lock=True,
                                                cancel=cancel),
                           log.bind(tenant_id=tenant_id), report)
    code = exit_code_of(report)
    if report.status not in (SUCCESS, PARTIAL):
        return SyncResult({"success": False, "error": report.extra.get("error", report.status)}, code, report)
    errors = list(report.lists["errors"]) + [{"id": c, "error": "conflict", "detail": "changed during the sync"}
                                              for c in report.lists["conflicts"]]
    tenant = _one(settings, settings.require_marketplace(), "marketplace",
                  'SELECT id, name, plan::text AS plan, status::text AS status FROM "Tenant" WHERE id = :id',
                  {"id": tenant_id})
    address = None
    if country:
        found = _one(settings, settings.require_marketplace(), "marketplace",
                     """SELECT "emailAddress" FROM inbound_addresses
                        WHERE "tenantId" = :id AND lower(marketplace COLLATE "C") = 'amazon'
                          AND upper(country COLLATE "C") = :cc ORDER BY "createdAt", id LIMIT 1""",
                     {"id": tenant_id, "cc": country})
        address = found[0][0] if found else None
    body: dict[str, Any] = {
        "success": not errors,
        "tenant": dict(tenant[0]._mapping) if tenant else None,
        "inboundAddress": address,
    }
    if errors:
        body["error"] = "; ".join(f"{e['error']}: {e['detail']}" for e in errors)
    return SyncResult(body, code, report)


def _differences(mapping: Any, product: Any, market: Any) -> list[dict[str, Any]]:
    if product is None or market is None:
        if product is not None and market is None:
            row = mapping.normalize(product.id, product.name, product.plan, product.status)
            if not row.error and row.archived:
                return []  # archived and absent: nothing to do, as a run sees it
        return [{"field": "exists", "product": product is not None, "marketplace": market is not None}]
    row = mapping.normalize(product.id, product.name, product.plan, product.status)
    out: list[dict[str, Any]] = []
    if row.error:
        field = {"invalid_plan": "plan", "invalid_status": "status", "invalid_name": "name",
                 "invalid_id": "id"}.get(row.error, "id")
        out.append({"field": field, "product": getattr(product, field), "marketplace": getattr(market, field, None),
                    "error": row.error})
        return out
    if row.status == ARCHIVED_MARK:  # archived: only the status is kept in step (CLOSED)
        if market.status != CLOSED:
            out.append({"field": "status", "product": CLOSED, "marketplace": market.status})
        return out
    for field, want in (("name", row.name), ("plan", row.plan), ("status", row.status)):
        have = getattr(market, field)
        if want != have:
            out.append({"field": field, "product": want, "marketplace": have})
    return out


def tenant_status(settings: Settings, tenant_id: str) -> tuple[dict[str, Any], int]:
    """The seed's status JSON plus `differences`; exit code 0, or 4 when in neither database."""
    product = _product_row(settings, tenant_id)
    market_db = settings.require_marketplace()
    params = {"id": tenant_id}
    market_rows = _one(settings, market_db, "marketplace",
                       'SELECT id, name, plan::text AS plan, status::text AS status FROM "Tenant" WHERE id = :id',
                       params)
    market = market_rows[0] if market_rows else None
    addresses = _one(settings, market_db, "marketplace",
                     """SELECT marketplace, country, "emailAddress" AS email, "validationStatus"::text AS status
                        FROM inbound_addresses WHERE "tenantId" = :id ORDER BY marketplace, country, "createdAt", id""",
                     params)
    connections = _one(settings, market_db, "marketplace",
                       """SELECT type::text AS type, status::text AS status, "displayName" FROM "MarketplaceConnection"
                          WHERE "tenantId" = :id ORDER BY "createdAt", id""", params)
    differences = _differences(settings.mapping, product, market)

    def side(row: Any) -> dict[str, Any]:
        if row is None:
            return {"exists": False, "name": None, "plan": None, "status": None}
        return {"exists": True, "name": row.name, "plan": row.plan, "status": row.status}

    body = {
        "tenantId": tenant_id,
        "product": side(product),
        "marketplace": side(market),
        "inSync": product is not None and not differences,
        "inboundAddresses": [dict(r._mapping) for r in addresses],
        "marketplaceConnections": [dict(r._mapping) for r in connections],
        "differences": differences,
    }
    return body, 0 if product is not None or market is not None else 4


__all__ = ["FAILED", "LOCKED", "NOT_FOUND", "SyncResult", "sync_tenant", "tenant_status"]
