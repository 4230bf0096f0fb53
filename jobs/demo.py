"""`tenant-reconcile demo`: the seed's six tenants plus a drifted plan, an archived tenant and an orphan,
on an embedded PostgreSQL; `plan` then `run`, then the seed's before/after table.

stdout keeps the JSON-lines contract (the table is also a `demo.table` event); the table is drawn
for humans on stderr.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import sqlalchemy as sa

from reconcile.db import DatabaseUrl, engine_for
from reconcile.logs import configure_logging, get_logger
from reconcile.reconciler import RunOptions, exit_code_of, run_reconcile
from reconcile.report import Report, new_run_id
from reconcile.schema import ensure_database, init_marketplace, init_product
from reconcile.settings import Settings

PRODUCT_TENANTS = [
    # id, name, plan, status  (product terms, lowercase)
    ("ecomlg-001", "eComLG", "pro", "active"),
    ("kbz-001", "KeyBuzz Studio", "starter", "active"),
    ("kbz-002", "KeyBuzz Agency", "pro", "active"),
    ("kbz-003", "KeyBuzz Labs", "dev", "trial"),
    ("kbz-004", "KeyBuzz Retail", "enterprise", "active"),
    ("tenant_test_dev", "Tenant Test Dev", "dev", "trial"),
    ("kbz-005", "KeyBuzz Legacy", "starter", "archived"),
]
MARKETPLACE_TENANTS = [
    # id, slug, name, plan, status  (marketplace terms): kbz-003 and kbz-004 missing, as in the seed
    ("ecomlg-001", "ecomlg-001", "eComLG", "PRO", "ACTIVE"),
    ("kbz-001", "kbz-001", "KeyBuzz Studio", "STARTER", "ACTIVE"),
    ("kbz-002", "kbz-002", "KeyBuzz Agency", "STARTER", "ACTIVE"),  # drifted plan
    ("tenant_test_dev", "tenant-test-dev", "Tenant Test Dev", "DEV", "TRIAL"),
    ("kbz-005", "kbz-005", "KeyBuzz Legacy", "STARTER", "ACTIVE"),  # archived in product
    ("legacy-009", "legacy-009", "Old Shop", "PRO", "ACTIVE"),      # orphan
]


def load_seed(product: DatabaseUrl, marketplace: DatabaseUrl) -> None:
    for db, init in ((product, init_product), (marketplace, init_marketplace)):
        ensure_database(db)
        init(db)
    with _engine(product).begin() as conn:
        conn.execute(sa.text("INSERT INTO tenants (id, name, plan, status) VALUES (:i, :n, :p, :s)"),
                     [dict(zip(("i", "n", "p", "s"), row, strict=True)) for row in PRODUCT_TENANTS])
    with _engine(marketplace).begin() as conn:
        conn.execute(sa.text('INSERT INTO "Tenant" (id, slug, name, plan, status, "updatedAt") '
                             "VALUES (:i, :g, :n, CAST(:p AS \"BillingPlan\"), CAST(:s AS \"TenantStatus\"), "
                             "timezone('UTC', now()))"),
                     [dict(zip(("i", "g", "n", "p", "s"), row, strict=True)) for row in MARKETPLACE_TENANTS])


def _engine(db: DatabaseUrl) -> sa.Engine:
    return engine_for(db)


def read_tables(product: DatabaseUrl, marketplace: DatabaseUrl) -> tuple[dict[str, Any], dict[str, Any]]:
    with _engine(product).connect() as conn:
        prod = {r.id: (r.plan, r.status) for r in conn.execute(sa.text("SELECT id, plan, status FROM tenants"))}
    with _engine(marketplace).connect() as conn:
        market = {r.id: (r.plan, r.status) for r in
                  conn.execute(sa.text('SELECT id, plan::text AS plan, status::text AS status FROM "Tenant"'))}
    return prod, market


def table_rows(prod: dict[str, Any], before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    def cell(value: Any) -> str | None:
        return f"{value[0]}/{value[1]}" if value else None

    return [{"tenant": tid, "product": cell(prod.get(tid)), "marketplace_before": cell(before.get(tid)),
             "marketplace_after": cell(after.get(tid))}
            for tid in sorted(set(prod) | set(before) | set(after))]


def render_table(rows: list[dict[str, Any]], report: Report) -> str:
    def mark(value: str | None) -> str:
        return f"✓ {value}" if value else "❌"

    outcome = {tid: "created" for tid in report.lists["created"]}
    outcome.update({u["id"]: "updated " + ", ".join(u["changes"]) for u in report.lists["updated"]})
    outcome.update({tid: "archived (CLOSED)" for tid in report.lists["archived"]})
    outcome.update({tid: "orphan (reported)" for tid in report.lists["orphans"]})
    header = ("tenant", "DB product", "DB marketplace before", "DB marketplace after", "action")
    lines = [(r["tenant"], mark(r["product"]), mark(r["marketplace_before"]), mark(r["marketplace_after"]),
              outcome.get(r["tenant"], "unchanged")) for r in rows]
    widths = [max(len(str(x[i])) for x in [header, *lines]) for i in range(len(header))]
    fmt = " | ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*header), "-+-".join("-" * w for w in widths)]
    out += [fmt.format(*line) for line in lines]
    return "\n".join(out)


def run_demo(log_format: str = "json", keep: bool = False) -> int:
    from reconcile.embedded import embedded_postgres

    configure_logging(log_format)
    log = get_logger(demo=True)
    started = time.perf_counter()
    with embedded_postgres(keep=keep) as server:
        product = DatabaseUrl.parse(server.url("keybuzz"), "product")
        marketplace = DatabaseUrl.parse(server.url("keybuzz_backend"), "marketplace")
        log.info("demo.server_started", product=product.display, marketplace=marketplace.display,
                 seconds=round(time.perf_counter() - started, 2))
        load_seed(product, marketplace)
        settings = Settings(product_url=product, marketplace_url=marketplace, log_format=log_format,
                            connect_retry_s=0)
        prod, before = read_tables(product, marketplace)
        reports = []
        for dry_run in (True, False):
            run_id = new_run_id()
            report = Report(run_id=run_id, mode="dry-run" if dry_run else "apply")
            reports.append(run_reconcile(settings, RunOptions(dry_run=dry_run), get_logger(run_id=run_id),
                                         report))
        _, after = read_tables(product, marketplace)
        rows = table_rows(prod, before, after)
        log.info("demo.table", rows=rows)
        print("\n" + render_table(rows, reports[-1]) + "\n", file=sys.stderr)
        if keep:
            print(f"embedded server kept in {server.workdir}: product {server.url('keybuzz')}",
                  file=sys.stderr)
    log.info("demo.done", seconds=round(time.perf_counter() - started, 2))
    return max(exit_code_of(r) for r in reports)
