"""Which tenants' inbound rows need a look: found in one scan of each inbound table (read-only, on
a connection of its own while the snapshot runs), so a run where nothing is missing costs one hash
aggregate whatever the tenant count."""

from __future__ import annotations

import json

import sqlalchemy as sa

from reconcile.db.sql import Query
from reconcile.scope import Scope


def candidates_sql(scope: Scope, countries: tuple[str, ...], connection_unique: bool) -> Query:
    """Tenants in scope, not CLOSED, whose inbound rows need a look: not exactly one address per
    country (any spelling), or an amazon connection lacking a country, spelled otherwise than
    `amazon` (a possible duplicate), or, when no unique constraint rules it out, duplicated.
    One scan of each table and one hash aggregate over the addresses: the whole cost of a run
    where nothing is missing. Canonical spellings are tested first so most rows skip the
    case-folding calls. Countries are bound parameters."""
    tenants = scope.where("id")
    by_tenant = scope.where('"tenantId"')
    params = {**tenants.params, **by_tenant.params, "wanted": json.dumps(list(countries))}
    canonical = " ".join(f"WHEN %(cc_{i})s THEN %(cc_{i})s" for i in range(len(countries)))
    per_country = " AND ".join(f"count(*) FILTER (WHERE k = %(cc_{i})s) = 1" for i in range(len(countries)))
    params.update({f"cc_{i}": code for i, code in enumerate(countries)})
    amazon = "(marketplace = '{0}' OR lower(marketplace COLLATE \"C\") = 'amazon')"
    duplicated = "" if connection_unique else f"""
        UNION ALL SELECT "tenantId" FROM inbound_connections WHERE ({by_tenant.sql}) AND {amazon.format("amazon")}
        GROUP BY "tenantId" HAVING count(*) > 1"""
    return Query(f"""
        SELECT id FROM "Tenant" e WHERE ({tenants.sql}) AND status <> 'CLOSED' AND NOT EXISTS (
            SELECT 1 FROM (
                SELECT "tenantId" AS t FROM (
                    SELECT "tenantId", CASE country {canonical} ELSE upper(country COLLATE "C") END AS k
                    FROM inbound_addresses WHERE ({by_tenant.sql}) AND {amazon.format("AMAZON")}
                ) addresses
                GROUP BY "tenantId" HAVING {per_country}
            ) complete WHERE complete.t = e.id)
        UNION
        SELECT "tenantId" FROM inbound_connections
        WHERE ({by_tenant.sql}) AND {amazon.format("amazon")}
          AND (marketplace <> 'amazon' OR NOT countries @> CAST(%(wanted)s AS jsonb))
        {duplicated}""", params)


def connection_unique(conn: sa.Connection) -> bool:
    """Whether a unique index on inbound_connections ("tenantId", marketplace) exists."""
    return bool(conn.exec_driver_sql("""
        SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
                       WHERE c.relname = 'inbound_connections' AND c.relnamespace = to_regnamespace(current_schema())
                         AND i.indisunique AND i.indnkeyatts = 2
                         AND (SELECT array_agg(a.attname::text ORDER BY a.attname)
                              FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum = ANY(i.indkey))
                             = ARRAY['marketplace', 'tenantId'])""").scalar())


# Measured at 1M tenants: the planner, without statistics on freshly written inbound tables, sorts
# for the aggregate; a hash aggregate without parallel workers or JIT is ~30 % faster. With the
# default 4MB work_mem the aggregate and the anti-join's hash spill to disk in batches: 128MB keeps
# them in memory up to ~1M tenants (4.8 s -> 3.4 s of server time there); beyond, they spill.
AGGREGATE_SESSION = ("SET LOCAL enable_sort = off", "SET LOCAL jit = off",
                      "SET LOCAL max_parallel_workers_per_gather = 0", "SET LOCAL work_mem = '128MB'")
