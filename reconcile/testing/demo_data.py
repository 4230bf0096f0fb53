"""The demo's tenants: six as keybuzz-backend's report shows them (two missing from the marketplace,
one with a drifted plan), plus one archived in the product and one orphan in the marketplace."""

from __future__ import annotations

import sqlalchemy as sa

from reconcile.db.engines import engine_for
from reconcile.db.urls import DatabaseUrl
from reconcile.testing.schema import ensure_database, init_marketplace, init_product

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
    # id, slug, name, plan, status  (marketplace terms): kbz-003 and kbz-004 missing
    ("ecomlg-001", "ecomlg-001", "eComLG", "PRO", "ACTIVE"),
    ("kbz-001", "kbz-001", "KeyBuzz Studio", "STARTER", "ACTIVE"),
    ("kbz-002", "kbz-002", "KeyBuzz Agency", "STARTER", "ACTIVE"),  # drifted plan
    ("tenant_test_dev", "tenant-test-dev", "Tenant Test Dev", "DEV", "TRIAL"),
    ("kbz-005", "kbz-005", "KeyBuzz Legacy", "STARTER", "ACTIVE"),  # archived in product
    ("legacy-009", "legacy-009", "Old Shop", "PRO", "ACTIVE"),      # orphan
]


def load_demo_tenants(product: DatabaseUrl, marketplace: DatabaseUrl) -> None:
    """Create both databases and schemas, and insert the demo's rows."""
    for db, init in ((product, init_product), (marketplace, init_marketplace)):
        ensure_database(db)
        init(db)
    with engine_for(product).begin() as conn:
        conn.execute(sa.text("INSERT INTO tenants (id, name, plan, status) VALUES (:i, :n, :p, :s)"),
                     [dict(zip(("i", "n", "p", "s"), row, strict=True)) for row in PRODUCT_TENANTS])
    with engine_for(marketplace).begin() as conn:
        conn.execute(sa.text('INSERT INTO "Tenant" (id, slug, name, plan, status, "updatedAt") '
                             "VALUES (:i, :g, :n, CAST(:p AS \"BillingPlan\"), CAST(:s AS \"TenantStatus\"), "
                             "timezone('UTC', now()))"),
                     [dict(zip(("i", "g", "n", "p", "s"), row, strict=True)) for row in MARKETPLACE_TENANTS])


def read_tables(product: DatabaseUrl, marketplace: DatabaseUrl) -> tuple[dict[str, tuple[str, str]],
                                                                         dict[str, tuple[str, str]]]:
    """(plan, status) per tenant id, in each database."""
    with engine_for(product).connect() as conn:
        prod = {r.id: (r.plan, r.status) for r in conn.execute(sa.text("SELECT id, plan, status FROM tenants"))}
    with engine_for(marketplace).connect() as conn:
        market = {r.id: (r.plan, r.status) for r in
                  conn.execute(sa.text('SELECT id, plan::text AS plan, status::text AS status FROM "Tenant"'))}
    return prod, market
