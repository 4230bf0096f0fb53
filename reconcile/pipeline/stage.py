"""Staging: the plan's write kinds go into session temp tables by COPY, and the creates that cannot be
applied (slug conflicts) are found with one join and taken out.

Runs for `plan` and `run` alike, inside the marketplace transaction (temp tables are private to the
session and vanish with the rollback of a dry run). This module is the only one that knows the
temp tables: hooks read the staged ids through `StagedTables`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import sqlalchemy as sa

from reconcile import copytext
from reconcile.actions import CREATE, ERROR, ORPHAN, SKIP, WRITES
from reconcile.db.copy import copy_in
from reconcile.db.sql import Query
from reconcile.mapping import ARCHIVED_MARK, SLUG_CONFLICT, Mapping, slug_for
from reconcile.pipeline.plan import Plan
from reconcile.shard import Shard

# Slugs a create cannot take: held by another marketplace tenant, or produced by an earlier create
# in the same plan (the bytewise-smallest id keeps it). A tenant holding its own slug appeared
# since the snapshot (or a saved plan was made): its create is a conflict, found by the insert.
_SLUG_CONFLICTS = """
WITH bad AS (
    SELECT c.id, c.slug, t.id AS holder, true AS existing
    FROM rc_create c JOIN "Tenant" t ON t.slug = c.slug AND t.id <> c.id
    UNION ALL
    SELECT id, slug, first_id, false FROM (
        SELECT id, slug, min(id COLLATE "C") OVER (PARTITION BY slug) AS first_id FROM rc_create
    ) s WHERE id <> first_id
), gone AS (
    DELETE FROM rc_create c USING bad WHERE c.id = bad.id RETURNING c.id
)
SELECT DISTINCT ON (id) id, slug, holder, existing FROM bad ORDER BY id, existing DESC
"""


# The conflict of a saved plan's write that the product no longer backs.
STALE_PLAN = "stale_plan"


@dataclass
class Staged:
    """What staging found: the planned creates that are row errors instead (id -> (error, detail)),
    and, when a saved plan is applied, the planned writes that went stale (id -> why): those are
    conflicts, left for the next run."""

    rejected: dict[str, tuple[str, str]] = field(default_factory=dict)
    stale: dict[str, str] = field(default_factory=dict)

    def creates(self, plan: Plan) -> int:
        """Creates that will be attempted."""
        return plan.count(CREATE) - len(self.rejected)

    def reject(self, tenant_id: str, error: str, detail: str) -> None:
        self.rejected.setdefault(tenant_id, (error, detail))


class StagedTables:
    """Read access to the staged plan for the hooks, in SQL they can embed, so no hook depends on
    the temp tables' names or layouts."""

    created_ids = "SELECT id FROM rc_create"
    reopened_ids = "SELECT id FROM rc_update WHERE status = 'CLOSED' AND new_status <> 'CLOSED'"

    @staticmethod
    def status_after(ids_table: str) -> str:
        """(id, status) for the ids of `ids_table` as the planned writes would leave them, without
        them being written (what a dry run needs)."""
        return f"""SELECT DISTINCT c.id,
                          CASE WHEN a.id IS NOT NULL THEN 'CLOSED' WHEN u.id IS NOT NULL THEN u.new_status
                               WHEN t.id IS NOT NULL THEN t.status::text ELSE k.status END AS status
                   FROM {ids_table} c LEFT JOIN "Tenant" t ON t.id = c.id
                   LEFT JOIN rc_archive a ON a.id = c.id LEFT JOIN rc_update u ON u.id = c.id
                   LEFT JOIN rc_create k ON k.id = c.id"""

    def __init__(self, plan: Plan, staged: Staged) -> None:
        self._plan = plan
        self._staged = staged

    def excluded_ids(self) -> Iterator[bytes]:
        """Escaped ids of the tenants a hook must leave alone: orphans, row errors and skipped."""
        for kind in (ORPHAN, ERROR, SKIP):
            for row in self._plan.spool(kind).rows():
                yield row[0]
        for tenant_id in self._staged.rejected:
            yield copytext.encode(tenant_id)


def stage(conn: sa.Connection, plan: Plan, stale: dict[str, str] | None = None) -> Staged:
    """Load the plan's write kinds into session temp tables; slug conflicts become row errors, and
    the `stale` ids (a saved plan's writes the product no longer backs) are taken out."""
    staged = Staged(stale=dict(stale or {}))
    for kind in WRITES:
        conn.exec_driver_sql(f"CREATE TEMP TABLE {kind.table} ({kind.columns_sql()}) ON COMMIT DROP")
        if plan.count(kind):
            copy_in(conn, kind.table, plan.spool(kind).rewind())
            conn.exec_driver_sql(f"ANALYZE {kind.table}")
    if plan.count(CREATE):
        for tenant_id, slug, holder, existing in conn.exec_driver_sql(_SLUG_CONFLICTS):
            detail = (f"slug {slug!r} is already used by marketplace tenant {holder!r}" if existing
                      else f"slug {slug!r} is also the slug of {holder!r}, created in this run")
            staged.reject(tenant_id, SLUG_CONFLICT, detail)
    if staged.stale:
        for kind in WRITES:
            conn.exec_driver_sql(f"DELETE FROM {kind.table} WHERE id = ANY(%(ids)s)", {"ids": list(staged.stale)})
    return staged


def cross_shard_slug_conflicts(product: sa.Connection, market: sa.Connection, staged: Staged, mapping: Mapping,
                               shard: Shard) -> None:
    """In a sharded run, a create must also lose its slug to a would-be create of another shard
    with a bytewise-smaller id (`a-b` vs `a_b`), exactly as one whole run decides."""
    creates = dict(tuple(r) for r in market.exec_driver_sql("SELECT id, slug FROM rc_create"))
    if not creates or shard.whole:
        return
    where = Query(f"NOT ({shard.sql_predicate()}) AND lower(replace(id, '_', '-')) = ANY(%(slugs)s)",
                  {"slugs": sorted(set(creates.values()))})
    query = mapping.product_select_sql(where)
    rivals = [r for r in product.exec_driver_sql(query.sql, query.params)
              if not r[4] and r[3] != ARCHIVED_MARK and slug_for(r[0]) in creates.values()]
    if not rivals:
        return
    present = set(market.exec_driver_sql('SELECT id FROM "Tenant" WHERE id = ANY(%(ids)s)',
                                         {"ids": [r[0] for r in rivals]}).scalars())
    new_rivals = [r[0] for r in rivals if r[0] not in present]
    lost = []
    for tenant_id, slug in creates.items():
        winner = min((r for r in new_rivals if slug_for(r) == slug), key=lambda r: r.encode(), default=None)
        if winner is not None and winner.encode() < tenant_id.encode():
            lost.append(tenant_id)
            staged.reject(tenant_id, SLUG_CONFLICT, f"slug {slug!r} is also the slug of {winner!r}, a new tenant "
                                                    "of another shard (the smallest id keeps it)")
    if lost:
        market.exec_driver_sql("DELETE FROM rc_create WHERE id = ANY(%(ids)s)", {"ids": lost})


__all__ = ["Staged", "StagedTables", "cross_shard_slug_conflicts", "stage"]
