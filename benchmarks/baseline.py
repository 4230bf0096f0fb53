"""The per-tenant baseline, what keybuzz-backend's `POST /api/v1/tenants/sync-all` did: per product
tenant one SELECT on the marketplace, then an INSERT or an UPDATE when needed, through SQLAlchemy
(Core), each statement autocommitted (it ran one SELECT + INSERT per tenant with no transaction).

Run as its own process (`python -m benchmarks.baseline PRODUCT_URL MARKET_URL LIMIT`) so its peak
RSS is its own. Product rows are streamed (server-side cursor), so its memory does not depend on
LIMIT. It prints one JSON line: tenants processed, seconds spent in the loop, statements by kind.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import sqlalchemy as sa

from reconcile.mapping import ARCHIVED_MARK, CLOSED, Mapping, slug_for

_SELECT = sa.text('SELECT name, plan::text AS plan, status::text AS status FROM "Tenant" WHERE id = :id')
_INSERT = sa.text('INSERT INTO "Tenant" (id, slug, name, plan, status, "updatedAt") '
                  'VALUES (:id, :slug, :name, CAST(:plan AS "BillingPlan"), CAST(:status AS "TenantStatus"), '
                  "timezone('UTC', now()))")
_UPDATE = sa.text('UPDATE "Tenant" SET name = :name, plan = CAST(:plan AS "BillingPlan"), '
                  "status = CAST(:status AS \"TenantStatus\"), \"updatedAt\" = timezone('UTC', now()) "
                  "WHERE id = :id")


def _psycopg2(url: str) -> sa.URL:
    return sa.make_url(url).set(drivername="postgresql+psycopg2")


def run(product_url: str, market_url: str, limit: int) -> dict[str, Any]:
    mapping = Mapping()
    product = sa.create_engine(_psycopg2(product_url))
    market = sa.create_engine(_psycopg2(market_url), isolation_level="AUTOCOMMIT")
    done = {"selects": 0, "inserts": 0, "updates": 0, "archives": 0, "errors": 0}
    with product.connect() as pconn, market.connect() as mconn:
        # The loop alone is timed (and extrapolated); start-up and connecting happen once.
        started = time.perf_counter()
        rows = pconn.execution_options(stream_results=True, yield_per=1000).execute(
            sa.text('SELECT id, name, plan, status FROM tenants ORDER BY id LIMIT :n'), {"n": limit})
        processed = 0
        for tenant_id, name, plan, status in rows:
            processed += 1
            row = mapping.normalize(tenant_id, name, plan, status)
            have = mconn.execute(_SELECT, {"id": tenant_id}).first()
            done["selects"] += 1
            if row.error:
                done["errors"] += 1
            elif have is None:
                if row.status != ARCHIVED_MARK:
                    mconn.execute(_INSERT, {"id": tenant_id, "slug": slug_for(tenant_id), "name": name,
                                            "plan": row.plan, "status": row.status})
                    done["inserts"] += 1
            elif row.status == ARCHIVED_MARK:
                if have.status != CLOSED:
                    mconn.execute(_UPDATE, {"id": tenant_id, "name": have.name, "plan": have.plan,
                                            "status": CLOSED})
                    done["archives"] += 1
            elif (row.name, row.plan, row.status) != tuple(have):
                mconn.execute(_UPDATE, {"id": tenant_id, "name": name, "plan": row.plan, "status": row.status})
                done["updates"] += 1
        seconds = time.perf_counter() - started
    product.dispose()
    market.dispose()
    return {"tenants": processed, "seconds": seconds, **done}


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
