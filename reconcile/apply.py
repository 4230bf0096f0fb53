"""The one place that writes tenants: the plan's spools go into temp tables by COPY, then three
set-based, compare-and-set statements run inside the caller's single marketplace transaction.

`stage` runs for `plan` and `run` alike (temp tables are private to the session and vanish with
the rollback of a dry run); `write` is what only `run` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa

from reconcile import copytext
from reconcile.mapping import ARCHIVED_MARK, SLUG_CONFLICT, Mapping, slug_for
from reconcile.pgcopy import Query, copy_in
from reconcile.plan import ActionSpool, Plan
from reconcile.shard import Shard

_TEMP_TABLES = {
    "rc_create": "id text, slug text, name text, plan text, status text",
    "rc_update": "id text, name text, plan text, status text, new_name text, new_plan text, new_status text",
    "rc_archive": "id text, name text, plan text, status text, orphan boolean",
}

# Slugs a create cannot take: held by an existing marketplace tenant, or produced by an earlier
# create in the same plan (the bytewise-smallest id keeps it).
_SLUG_CONFLICTS = """
WITH bad AS (
    SELECT c.id, c.slug, t.id AS holder, true AS existing FROM rc_create c JOIN "Tenant" t ON t.slug = c.slug
    UNION ALL
    SELECT id, slug, first_id, false FROM (
        SELECT id, slug, min(id COLLATE "C") OVER (PARTITION BY slug) AS first_id FROM rc_create
    ) s WHERE id <> first_id
), gone AS (
    DELETE FROM rc_create c USING bad WHERE c.id = bad.id RETURNING c.id
)
SELECT DISTINCT ON (id) id, slug, holder, existing FROM bad ORDER BY id, existing DESC
"""

_NOW = "timezone('UTC', statement_timestamp())"

# Each statement returns the planned ids it could NOT apply: the compare-and-set conflicts. The
# comparisons are NULL-safe: a marketplace column holding NULL (where NOT NULL was dropped) is
# matched as read and repaired, instead of failing the compare-and-set every night.
_WRITE_CREATES = f"""
WITH done AS (
    INSERT INTO "Tenant" (id, slug, name, plan, status, "createdAt", "updatedAt")
    SELECT id, slug, name, plan::"BillingPlan", status::"TenantStatus", {_NOW}, {_NOW} FROM rc_create
    ON CONFLICT DO NOTHING
    RETURNING id
)
SELECT c.id FROM rc_create c WHERE NOT EXISTS (SELECT 1 FROM done WHERE done.id = c.id)
"""

_WRITE_UPDATES = f"""
WITH done AS (
    UPDATE "Tenant" t
    SET name = u.new_name, plan = u.new_plan::"BillingPlan", status = u.new_status::"TenantStatus",
        "updatedAt" = {_NOW}
    FROM rc_update u
    WHERE t.id = u.id AND t.name IS NOT DISTINCT FROM u.name AND t.plan::text IS NOT DISTINCT FROM u.plan
      AND t.status::text IS NOT DISTINCT FROM u.status
    RETURNING t.id
)
SELECT u.id FROM rc_update u WHERE NOT EXISTS (SELECT 1 FROM done WHERE done.id = u.id)
"""

_WRITE_ARCHIVES = f"""
WITH done AS (
    UPDATE "Tenant" t
    SET status = 'CLOSED', "updatedAt" = {_NOW}
    FROM rc_archive a
    WHERE t.id = a.id AND t.name IS NOT DISTINCT FROM a.name AND t.plan::text IS NOT DISTINCT FROM a.plan
      AND t.status::text IS NOT DISTINCT FROM a.status
    RETURNING t.id
)
SELECT a.id FROM rc_archive a WHERE NOT EXISTS (SELECT 1 FROM done WHERE done.id = a.id)
"""


@dataclass
class Outcome:
    """What the writes did not do: ids that lost the compare-and-set, per action."""

    conflicts: dict[str, set[str]] = field(default_factory=lambda: {"create": set(), "update": set(),
                                                                    "archive": set()})

    @property
    def count(self) -> int:
        return sum(len(ids) for ids in self.conflicts.values())


def _load(conn: sa.Connection, table: str, spool: ActionSpool) -> None:
    if spool.count:
        copy_in(conn, table, spool.rewind())
        conn.exec_driver_sql(f"ANALYZE {table}")


def stage(conn: sa.Connection, plan: Plan) -> None:
    """Load the plan into session temp tables and turn slug conflicts into row errors."""
    for table, columns in _TEMP_TABLES.items():
        conn.exec_driver_sql(f"CREATE TEMP TABLE {table} ({columns}) ON COMMIT DROP")
    _load(conn, "rc_create", plan.creates)
    _load(conn, "rc_update", plan.updates)
    _load(conn, "rc_archive", plan.archives)
    if plan.creates.count:
        for tenant_id, slug, holder, existing in conn.exec_driver_sql(_SLUG_CONFLICTS):
            detail = (f"slug {slug!r} is already used by marketplace tenant {holder!r}" if existing
                      else f"slug {slug!r} is also the slug of {holder!r}, created in this run")
            plan.reject_create(tenant_id, copytext.line_of([tenant_id, SLUG_CONFLICT, detail]))


def write(conn: sa.Connection, plan: Plan) -> Outcome:
    """Apply the staged plan. Runs inside the caller's transaction; commits nothing itself."""
    outcome = Outcome()
    for action, count, sql in (("create", plan.create_count, _WRITE_CREATES),
                               ("update", plan.updates.count, _WRITE_UPDATES),
                               ("archive", plan.archives.count, _WRITE_ARCHIVES)):
        if count:
            outcome.conflicts[action] = {row[0] for row in conn.exec_driver_sql(sql)}
    return outcome


def cross_shard_slug_conflicts(product: sa.Connection, market: sa.Connection, plan: Plan, mapping: Mapping,
                               shard: Shard) -> None:
    """In a sharded run, a create must also lose its slug to a would-be create of another shard
    with a bytewise-smaller id (`a-b` vs `a_b`), exactly as one whole run decides."""
    creates = dict(tuple(r) for r in market.exec_driver_sql("SELECT id, slug FROM rc_create"))
    if not creates or shard.whole:
        return
    slugs = sorted(set(creates.values()))
    where = Query(f"NOT ({shard.sql_predicate()}) AND lower(replace(id, '_', '-')) = ANY(%(slugs)s)",
                  {"slugs": slugs})
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
            plan.reject_create(tenant_id, copytext.line_of([
                tenant_id, SLUG_CONFLICT, f"slug {slug!r} is also the slug of {winner!r}, a new tenant of "
                                          "another shard (the smallest id keeps it)"]))
    if lost:
        market.exec_driver_sql("DELETE FROM rc_create WHERE id = ANY(%(ids)s)", {"ids": lost})
