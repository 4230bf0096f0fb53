"""One tenant at a time, as domain results: `sync_tenant` (a run restricted to one id) and
`tenant_status` (both rows side by side, and how they differ). The CLI and the HTTP server shape
these into their answers (jobs.answers).

A sync is a full run restricted to one id, so it shares the run's transaction, compare-and-set
and row-error rules; it locks like a single-tenant writer: the run lock shared (never beside a
whole or shard run) and a transaction lock on its tenant, so concurrent syncs of one tenant run
one after the other. `tenant_status` only reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reconcile.actions import CONFLICTS, ERROR
from reconcile.db.cancel import RUN_STOPPED, Cancellation
from reconcile.db.copy import server_encoding
from reconcile.db.engines import reading
from reconcile.db.sql import utf8_order
from reconcile.errors import DatabaseError, TenantNotFound
from reconcile.hooks import HookContext, HookResult, PrepareContext
from reconcile.inbound import inbound_hook
from reconcile.mapping import ARCHIVED_MARK, CLOSED, Mapping
from reconcile.pipeline.run import RunOptions, run_reconcile
from reconcile.report.model import Report, new_run_id
from reconcile.settings import Settings
from reconcile.shard import Shard

NOT_FOUND = "Tenant not found in product DB"
_TENANT = 'SELECT id, name, plan::text AS plan, status::text AS status FROM "Tenant" WHERE id = %(id)s'
_ADDRESS = """SELECT "emailAddress" FROM inbound_addresses
              WHERE "tenantId" = %(id)s AND lower(marketplace COLLATE "C") = 'amazon'
                AND upper(country COLLATE "C") = %(cc)s
              ORDER BY "createdAt", id LIMIT 1"""


def _product_row(settings: Settings, tenant_id: str, cancel: Cancellation | None = None,
                 stopped: str = RUN_STOPPED) -> Any:
    with reading(settings, settings.require_product(), "product", cancel=cancel, stopped=stopped) as conn:
        return conn.exec_driver_sql("SELECT id, name, plan, status FROM tenants WHERE id = %(id)s",
                                    {"id": tenant_id}).first()


@dataclass
class SyncOutcome:
    """What a sync did: its run's report, the marketplace row after it, the inbound address (when
    one was asked for), and the row errors or conflicts that kept it from succeeding."""

    report: Report
    tenant: dict[str, Any] | None = None
    inbound_address: str | None = None
    problems: list[dict[str, Any]] = field(default_factory=list)

    @property
    def completed(self) -> bool:
        return self.report.completed

    @property
    def succeeded(self) -> bool:
        return self.completed and not self.problems

    @property
    def exit_code(self) -> int:
        return self.report.exit_code


def sync_report(settings: Settings, run_id: str | None = None, trigger: str = "manual") -> Report:
    """The report of one sync, made before it starts: whoever stops the sync can still emit it."""
    return Report(run_id=run_id or new_run_id(), mode="apply", shard="0/1", id_limit=settings.report_id_limit,
                  trigger=trigger)


def sync_tenant(settings: Settings, tenant_id: str, country: str | None, log: Any,
                cancel: Cancellation | None = None, report: Report | None = None) -> SyncOutcome:
    """Reconcile one tenant (create / update / archive) and, unless `country` is None, ensure its
    inbound address for that country. Raises TenantNotFound (exit 4) before any run. `cancel` stops
    it in any phase, its first lookup included; `report` (see `sync_report`) carries its run id and
    trigger."""
    settings = settings.with_overrides(shard=Shard())  # one tenant: shards do not apply
    report = report or sync_report(settings)
    log = log.bind(tenant_id=tenant_id)
    try:
        found = _product_row(settings, tenant_id, cancel)
    except DatabaseError as exc:  # like a failed run: a report, then the answer says why
        report.set_databases(settings.require_product(), settings.require_marketplace())
        report.fail(str(exc), exc.exit_code)
        report.emit(log)
        return SyncOutcome(report)
    if found is None:
        raise TenantNotFound(NOT_FOUND)
    answer = _AnswerReads(tenant_id, country)
    inbound = inbound_hook(settings, (country,)) if country else None
    options = RunOptions(tenant_ids=(tenant_id,), hooks=(*((inbound,) if inbound else ()), answer), cancel=cancel)
    report = run_reconcile(settings, options, log, report)
    if not report.completed:
        return SyncOutcome(report)
    problems = list(report.lists[ERROR.counted_as]) + [
        {"id": c, "error": "conflict", "detail": "changed during the sync"} for c in report.lists[CONFLICTS]]
    return SyncOutcome(report, answer.tenant, answer.address, problems)


class _AnswerReads:
    """The last hook of a sync (reconcile.hooks): reads what its answer shows, the tenant row and its
    inbound address, inside the run's transaction. Nothing is left to read after the commit, so a
    sync that committed can no longer fail (a read failing here rolls the sync back instead)."""

    def __init__(self, tenant_id: str, country: str | None) -> None:
        self.tenant_id = tenant_id
        self.country = country
        self.tenant: dict[str, Any] | None = None
        self.address: str | None = None

    def prepare(self, ctx: PrepareContext) -> Callable[[], None]:
        return lambda: None

    def __call__(self, ctx: HookContext) -> HookResult:
        row = ctx.conn.exec_driver_sql(_TENANT, {"id": self.tenant_id}).mappings().first()
        self.tenant = dict(row) if row else None
        if self.country:
            self.address = ctx.conn.exec_driver_sql(_ADDRESS, {"id": self.tenant_id, "cc": self.country}).scalar()
        return HookResult("answer")


@dataclass
class TenantStatus:
    """One tenant in both databases. `differences` are in marketplace terms; `in_sync` is true only
    when a run would have nothing to do for it."""

    tenant_id: str
    product: Any
    marketplace: Any
    inbound_addresses: list[dict[str, Any]]
    marketplace_connections: list[dict[str, Any]]
    differences: list[dict[str, Any]]

    @property
    def in_sync(self) -> bool:
        return self.product is not None and not self.differences

    @property
    def found(self) -> bool:
        return self.product is not None or self.marketplace is not None


STATUS_STOPPED = "status stopped ({reason}); it only reads, nothing was changed"


def tenant_status(settings: Settings, tenant_id: str, cancel: Cancellation | None = None) -> TenantStatus:
    """Both rows, the inbound addresses and connections; `cancel` stops the reads (Cancelled)."""
    product = _product_row(settings, tenant_id, cancel, STATUS_STOPPED)
    with reading(settings, settings.require_marketplace(), "marketplace", cancel=cancel,
                 stopped=STATUS_STOPPED) as conn:
        params = {"id": tenant_id}
        market = conn.exec_driver_sql(_TENANT, params).first()
        addresses = conn.exec_driver_sql(
            """SELECT marketplace, country, "emailAddress" AS email, "validationStatus"::text AS status
               FROM inbound_addresses WHERE "tenantId" = %(id)s ORDER BY marketplace, country, "createdAt", id""",
            params).mappings().all()
        connections = conn.exec_driver_sql(
            """SELECT type::text AS type, status::text AS status, "displayName" FROM "MarketplaceConnection"
               WHERE "tenantId" = %(id)s ORDER BY "createdAt", id""", params).mappings().all()
    return TenantStatus(tenant_id, product, market, [dict(r) for r in addresses], [dict(r) for r in connections],
                        differences(settings.mapping, product, market))


def differences(mapping: Mapping, product: Any, market: Any) -> list[dict[str, Any]]:
    """How the marketplace row differs from what the product row maps to, as a run sees it."""
    if product is None or market is None:
        if product is not None:
            row = mapping.normalize(product.id, product.name, product.plan, product.status)
            if not row.error and row.archived:
                return []  # archived and absent: nothing to do
        return [{"field": "exists", "product": product is not None, "marketplace": market is not None}]
    row = mapping.normalize(product.id, product.name, product.plan, product.status)
    if row.error:
        field_name = {"invalid_plan": "plan", "invalid_status": "status", "invalid_name": "name",
                      "invalid_id": "id"}.get(row.error, "id")
        return [{"field": field_name, "product": getattr(product, field_name),
                 "marketplace": getattr(market, field_name, None), "error": row.error}]
    if row.status == ARCHIVED_MARK:  # archived: only the status is kept in step (CLOSED)
        return [] if market.status == CLOSED else [{"field": "status", "product": CLOSED,
                                                    "marketplace": market.status}]
    return [{"field": name, "product": want, "marketplace": getattr(market, name)}
            for name, want in (("name", row.name), ("plan", row.plan), ("status", row.status))
            if want != getattr(market, name)]


def unchanged_ids(settings: Settings, report: Report) -> list[str]:
    """Up to the report's id limit of the tenants a run left unchanged (the report keeps counts,
    the HTTP `sync-all` answer lists them)."""
    touched = {*report.lists["created"], *report.lists["archived"], *report.lists[CONFLICTS],
               *report.lists["skipped"], *(u["id"] for u in report.lists["updated"]),
               *(e["id"] for e in report.lists[ERROR.counted_as])}
    limit = report.id_limit
    with reading(settings, settings.require_product(), "product") as conn:
        order = utf8_order("id", server_encoding(conn))
        rows = conn.exec_driver_sql(f"SELECT id FROM tenants WHERE {settings.shard.sql_predicate()} "
                                    f"ORDER BY {order} LIMIT %(n)s", {"n": limit + len(touched)})
        return [r.id for r in rows if r.id not in touched][:min(limit, report.counts["unchanged"])]
