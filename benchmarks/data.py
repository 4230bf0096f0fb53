"""Benchmark data: N product tenants and a marketplace copy with a known, deterministic drift.

Everything is generated and moved server-side or by COPY through a temp file, so loading ten
million tenants needs neither Python objects per row nor memory proportional to N.
"""

from __future__ import annotations

import tempfile
import time
from contextlib import closing
from dataclasses import dataclass, field

import psycopg2

from reconcile.db import DatabaseUrl
from reconcile.schema import init_marketplace, init_product


def dsn(db: DatabaseUrl) -> str:
    return db.url.set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass
class Expected:
    """What a correct first run must report for the generated drift."""

    created: int = 0
    updated: int = 0
    archived: int = 0
    orphans: int = 0
    unchanged: int = 0
    errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass
class Dataset:
    product: DatabaseUrl
    marketplace: DatabaseUrl
    tenants: int
    expected: Expected = field(default_factory=Expected)
    load_seconds: float = 0.0


# ids: tnt-000000001 …, every 100th with an underscore (slug differs from id); plan/status cycle
# through every mapped value, NULLs included; one in seven is already archived (CLOSED there).
_PRODUCT_SQL = """
INSERT INTO tenants (id, name, plan, status)
SELECT CASE WHEN g % 100 = 0 THEN 'tnt_' ELSE 'tnt-' END || lpad(g::text, 9, '0'),
       'Tenant ' || g,
       (ARRAY['dev', 'starter', 'pro', 'enterprise', NULL])[1 + g % 5],
       (ARRAY['trial', 'active', 'active', 'suspended', NULL, 'closed', 'archived'])[1 + g % 7]
FROM generate_series(1, {n}) AS g
"""

_MARKET_COPY_OUT = """
COPY (SELECT id, replace(lower(id), '_', '-'), name, upper(coalesce(plan, 'dev')),
             CASE status WHEN 'archived' THEN 'CLOSED' ELSE upper(coalesce(status, 'active')) END,
             timezone('UTC', now()), timezone('UTC', now())
      FROM tenants) TO STDOUT
"""

_G = "substr(id, 5)::bigint"


def load(product: DatabaseUrl, marketplace: DatabaseUrl, tenants: int, drift: float) -> Dataset:
    """Create schemas, load `tenants` rows, copy them to the marketplace, then apply the drift:
    a quarter each of creates (rows deleted from the marketplace), updates (plan changed there),
    archives (product status set to archived) and orphans (extra marketplace rows)."""
    started = time.perf_counter()
    init_product(product)
    init_marketplace(marketplace)
    data = Dataset(product, marketplace, tenants)
    per_kind = round(tenants * drift / 4)
    step = max(tenants // per_kind, 8) if per_kind else 0
    with closing(psycopg2.connect(dsn(product))) as pconn, closing(psycopg2.connect(dsn(marketplace))) as mconn:
        pconn.autocommit = mconn.autocommit = True
        pcur, mcur = pconn.cursor(), mconn.cursor()
        pcur.execute(_PRODUCT_SQL.format(n=int(tenants)))
        with tempfile.TemporaryFile() as spool:
            pcur.copy_expert(_MARKET_COPY_OUT, spool, size=1 << 20)
            spool.seek(0)
            mcur.copy_expert('COPY "Tenant" (id, slug, name, plan, status, "createdAt", "updatedAt") FROM STDIN',
                             spool, size=1 << 20)
        if step:
            # g % 7 = 6 is archived (CLOSED in the marketplace), g % 7 = 5 closed: skip them where
            # the drift would be invisible, so the expected counts are exact.
            mcur.execute(f'DELETE FROM "Tenant" WHERE {_G} % {step} = 1 AND {_G} % 7 <> 6 '
                         f"AND {_G} <= {per_kind * step}")
            data.expected.created = mcur.rowcount
            mcur.execute(f"""UPDATE "Tenant" SET plan = CASE plan WHEN 'PRO' THEN 'DEV'::"BillingPlan"
                                                             ELSE 'PRO'::"BillingPlan" END
                             WHERE {_G} % {step} = 2 AND {_G} % 7 <> 6 AND {_G} <= {per_kind * step}""")
            data.expected.updated = mcur.rowcount
            pcur.execute(f"UPDATE tenants SET status = 'archived' WHERE {_G} % {step} = 3 "
                         f"AND {_G} % 7 NOT IN (5, 6) AND {_G} <= {per_kind * step}")
            data.expected.archived = pcur.rowcount
            mcur.execute(f"""INSERT INTO "Tenant" (id, slug, name, plan, status, "updatedAt")
                             SELECT 'orphan-' || g, 'orphan-' || g, 'Orphan ' || g, 'PRO', 'ACTIVE',
                                    timezone('UTC', now())
                             FROM generate_series(1, {per_kind}) AS g""")
            data.expected.orphans = mcur.rowcount
    for db in (product, marketplace):
        with closing(psycopg2.connect(dsn(db))) as conn:
            conn.autocommit = True
            conn.cursor().execute("VACUUM ANALYZE")
    e = data.expected
    e.unchanged = tenants - e.created - e.updated - e.archived
    data.load_seconds = time.perf_counter() - started
    return data
