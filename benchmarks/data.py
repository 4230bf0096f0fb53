"""Benchmark data: N product tenants and a marketplace copy with a known, deterministic drift.

Rows are generated server-side (`generate_series`) and moved from one database to the other by
COPY through an OS pipe (one thread writes COPY OUT into it while this one feeds COPY IN from it),
so loading ten million tenants needs neither a Python object per row, nor memory or disk that grows
with N. Every choice (plan, status, name, which tenants drift) is a hash of the tenant's number and
`drift_seed`, so a run is reproducible and drift is spread evenly and independently of the plan/status mix.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import psycopg2

from reconcile.db.urls import DatabaseUrl, url_with_secret
from reconcile.testing.schema import init_marketplace, init_product

COPY_CHUNK = 1 << 20


def dsn(db: DatabaseUrl) -> str:
    return url_with_secret(db.url)


@dataclass
class Expected:
    """What a correct first run must report for the generated drift (counts are rowcounts of the
    statements that made the drift, not the intended shares)."""

    created: int = 0
    updated: int = 0
    archived: int = 0
    orphans: int = 0
    unchanged: int = 0
    errors: int = 0
    conflicts: int = 0
    # Product tenants neither archived nor closed: after the first run each is in the marketplace
    # and not CLOSED, so `--ensure-inbound` owes each one address per country.
    open_tenants: int = 0

    def first_run(self) -> dict[str, int]:
        return {"created": self.created, "updated": self.updated, "archived": self.archived,
                "unchanged": self.unchanged, "orphans": self.orphans, "errors": self.errors,
                "conflicts": self.conflicts}

    def steady_run(self) -> dict[str, int]:
        """A second run over the same data: nothing to do, the orphans are still reported."""
        total = self.created + self.updated + self.archived + self.unchanged
        return {"created": 0, "updated": 0, "archived": 0, "unchanged": total, "orphans": self.orphans,
                "errors": 0, "conflicts": 0}

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass
class Dataset:
    product: DatabaseUrl
    marketplace: DatabaseUrl
    tenants: int
    drift: float
    seed: int
    expected: Expected = field(default_factory=Expected)
    load_seconds: float = 0.0
    phases_s: dict[str, float] = field(default_factory=dict)


def hash_sql(number: str, salt: int, seed: int) -> str:
    """A 32-bit multiplicative (Knuth) hash of an integer expression, as a non-negative bigint."""
    return f"((({number}) + {int(seed) * 1_000_003 + salt}) * 2654435761) % 4294967296"


def _product_sql(tenants: int, seed: int) -> str:
    p = f"({hash_sql('g', 11, seed)} % 100)"
    s = f"({hash_sql('g', 23, seed)} % 1000)"
    k = f"({hash_sql('g', 37, seed)} % 1000)"
    # ids: tnt-000000001 …; 1 % with an underscore (their slug differs from the id).
    # plan: 40 % dev, 30 starter, 18 pro, 8 enterprise, 2 NULL, 2 spelled ' Pro' / 'STARTER ' (trimmed,
    # case-insensitive). status: 70 % active, 15 trial, 5 suspended, 3 closed, 2 NULL, 4 archived,
    # 1 'Active' / ' trial'. Names: mostly ASCII, 5 % accented, 0.1 % with a backslash (COPY escapes it).
    return f"""
INSERT INTO tenants (id, name, plan, status, created_at, updated_at)
SELECT CASE WHEN {k} % 100 = 7 THEN 'tnt_' ELSE 'tnt-' END || lpad(g::text, 9, '0'),
       CASE WHEN {k} < 50 THEN 'Société Générale n°' || g
            WHEN {k} = 999 THEN 'ACME \\ Tools ' || g
            ELSE 'Tenant ' || g END,
       CASE WHEN {p} < 40 THEN 'dev' WHEN {p} < 70 THEN 'starter' WHEN {p} < 88 THEN 'pro'
            WHEN {p} < 96 THEN 'enterprise' WHEN {p} < 98 THEN NULL WHEN {p} = 98 THEN ' Pro'
            ELSE 'STARTER ' END,
       CASE WHEN {s} < 700 THEN 'active' WHEN {s} < 850 THEN 'trial' WHEN {s} < 900 THEN 'suspended'
            WHEN {s} < 930 THEN 'closed' WHEN {s} < 950 THEN NULL WHEN {s} < 990 THEN 'archived'
            WHEN {s} < 995 THEN 'Active' ELSE ' trial' END,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second',
       timestamptz '2025-06-01 00:00:00+00'
FROM generate_series(1, {int(tenants)}) AS g
"""


# The marketplace as a correct reconcile would leave it: the default mapping, archived -> CLOSED.
_MARKET_OUT = """
COPY (SELECT id, replace(lower(id), '_', '-'), name,
             coalesce(nullif(upper(btrim(plan)), ''), 'DEV'),
             CASE lower(btrim(coalesce(status, ''))) WHEN '' THEN 'ACTIVE' WHEN 'archived' THEN 'CLOSED'
                  ELSE upper(btrim(status)) END,
             timezone('UTC', created_at), timestamp '2025-06-01 00:00:00'
      FROM tenants) TO STDOUT
"""
_MARKET_IN = 'COPY "Tenant" (id, slug, name, plan, status, "createdAt", "updatedAt") FROM STDIN'

# Tenant number from an id: every generated id ends with 9 digits.
_NUMBER = "right(id, 9)::bigint"


def pipe_copy(source: Any, copy_out: str, target: Any, copy_in: str) -> int:
    """COPY OUT on `source` streamed into COPY IN on `target` through an OS pipe; returns rows in."""
    read_fd, write_fd = os.pipe()
    reader = os.fdopen(read_fd, "rb", buffering=COPY_CHUNK)
    writer = os.fdopen(write_fd, "wb", buffering=COPY_CHUNK)
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            with writer, source.cursor() as cur:
                cur.copy_expert(copy_out, writer, size=COPY_CHUNK)
        except BaseException as exc:  # re-raised below, in the calling thread
            failure.append(exc)

    thread = threading.Thread(target=produce, name="copy-out", daemon=True)
    thread.start()
    try:
        with reader, target.cursor() as cur:
            cur.copy_expert(copy_in, reader, size=COPY_CHUNK)
            rows = cur.rowcount
    finally:
        thread.join()
    if failure:
        raise failure[0]
    return rows


def load(product: DatabaseUrl, marketplace: DatabaseUrl, tenants: int, drift: float, seed: int = 1) -> Dataset:
    """Create the schemas, load `tenants` rows, mirror them, then drift: a quarter each of creates
    (rows deleted from the marketplace), updates (name or plan changed there), archives (product
    status set to archived while the marketplace row is open) and orphans (extra marketplace rows)."""
    data = Dataset(product, marketplace, tenants, drift, seed)
    started = time.perf_counter()
    init_product(product)
    init_marketplace(marketplace)
    width = drift * 1_000_000 / 4  # drift class width on a 0..999999 hash scale
    bucket = f"({hash_sql(_NUMBER, 53, seed)} % 1000000)"
    e = data.expected
    with closing(psycopg2.connect(dsn(product))) as pconn, closing(psycopg2.connect(dsn(marketplace))) as mconn:
        pconn.autocommit = mconn.autocommit = True
        pcur, mcur = pconn.cursor(), mconn.cursor()
        for cur in (pcur, mcur):
            cur.execute("SET synchronous_commit = off")
        t = time.perf_counter()
        pcur.execute(_product_sql(tenants, seed))
        data.phases_s["product"] = time.perf_counter() - t

        t = time.perf_counter()
        pipe_copy(pconn, _MARKET_OUT, mconn, _MARKET_IN)
        data.phases_s["marketplace"] = time.perf_counter() - t

        t = time.perf_counter()
        # CLOSED marketplace rows are skipped: for an archived product tenant a missing or changed
        # row is no action at all, and the marketplace cannot tell archived from closed.
        mcur.execute(f"""DELETE FROM "Tenant" WHERE {bucket} < {width} AND status <> 'CLOSED'""")
        e.created = mcur.rowcount
        mcur.execute(f"""UPDATE "Tenant" SET
                           name = CASE WHEN {bucket} % 2 = 0 THEN name || ' (renamed)' ELSE name END,
                           plan = CASE WHEN {bucket} % 2 = 0 THEN plan
                                       WHEN plan = 'PRO' THEN 'ENTERPRISE'::"BillingPlan"
                                       ELSE 'PRO'::"BillingPlan" END
                         WHERE {bucket} >= {width} AND {bucket} < {2 * width} AND status <> 'CLOSED'""")
        e.updated = mcur.rowcount
        pcur.execute(f"""UPDATE tenants SET status = 'archived'
                         WHERE {bucket} >= {2 * width} AND {bucket} < {3 * width}
                           AND lower(btrim(coalesce(status, ''))) NOT IN ('archived', 'closed')""")
        e.archived = pcur.rowcount
        orphans = round(tenants * drift / 4)
        mcur.execute(f"""INSERT INTO "Tenant" (id, slug, name, plan, status, "createdAt", "updatedAt")
                         SELECT 'orphan-' || lpad(g::text, 9, '0'), 'orphan-' || lpad(g::text, 9, '0'),
                                'Orphan ' || g, 'STARTER', CASE WHEN g % 10 = 0 THEN 'CLOSED' ELSE 'ACTIVE' END
                                ::"TenantStatus", timestamp '2024-01-01', timestamp '2025-06-01'
                         FROM generate_series(1, {orphans}) AS g""")
        e.orphans = mcur.rowcount
        e.unchanged = tenants - e.created - e.updated - e.archived
        pcur.execute("SELECT count(*) FROM tenants "
                     "WHERE lower(btrim(coalesce(status, ''))) NOT IN ('archived', 'closed')")
        e.open_tenants = int(pcur.fetchone()[0])
        data.phases_s["drift"] = time.perf_counter() - t

        t = time.perf_counter()
        # Like long-lived production tables: hint bits set, visibility map and statistics current.
        for cur in (pcur, mcur):
            cur.execute("SET maintenance_work_mem = '256MB'")
            cur.execute("VACUUM (FREEZE, ANALYZE)")
        data.phases_s["vacuum"] = time.perf_counter() - t
    data.load_seconds = time.perf_counter() - started
    return data
