"""The inbound rows of the candidate tenants, ensured inside the run's transaction in a handful of
set-based statements: which tenants are eligible, what exists already (any spelling), then the
missing connections, the missing countries of existing connections, and the missing addresses.
A dry run stops after counting what it would create."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import IO, Any

from reconcile.actions import INBOUND_CREATED
from reconcile.db.copy import copy_in, copy_out
from reconcile.db.sql import NOW_UTC, Query
from reconcile.hooks import HookContext, HookResult, RowError
from reconcile.inbound.tokens import id_prefix, row_id_sql, tokens
from reconcile.mapping import INVALID_ID_FOR_EMAIL
from reconcile.tempfiles import discard, temp_file, temp_space

EMAIL_ID_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_-]*$"
CONNECTION_MARKETPLACE = "amazon"
ADDRESS_MARKETPLACE = "AMAZON"
HOOK_NAME = "inbound"
_SAMPLE = 20
DUPLICATE_CONNECTION = "duplicate_inbound_connection"
DUPLICATE_ADDRESS = "duplicate_inbound_address"
_BAD_ID = ("id cannot be part of an e-mail address (allowed: letters, digits, '_' and '-', starting with a "
           "letter or digit)")


class _Ensure:
    """One ensure pass: the hook's context, the countries, and the statements' shared parameters."""

    def __init__(self, ctx: HookContext, countries: tuple[str, ...], domain: str) -> None:
        self.ctx = ctx
        self.countries = countries
        self.domain = domain
        self.params = {"countries": list(countries), "countries_json": json.dumps(list(countries))}
        self.summary: dict[str, Any] = {"countries": list(countries)}

    def sql(self, statement: str, **extra: Any) -> Any:
        return self.ctx.conn.exec_driver_sql(statement, {**self.params, **extra})

    def load_candidates(self, candidates: IO[bytes]) -> None:
        """The scan's candidates, those this run creates or reopens, and the ids to leave alone."""
        # The completeness aggregate over every inbound row stays in memory instead of spilling.
        self.sql("SET LOCAL work_mem = '128MB'")
        self.sql("CREATE TEMP TABLE rc_candidates (id text) ON COMMIT DROP")
        copy_in(self.ctx.conn, "rc_candidates", candidates)
        staged = self.ctx.staged
        self.sql(f"INSERT INTO rc_candidates {staged.created_ids} UNION ALL {staged.reopened_ids}")
        self.sql("CREATE TEMP TABLE rc_excluded (id text) ON COMMIT DROP")
        with temp_file() as excluded:
            with temp_space():
                for tenant_id in staged.excluded_ids():
                    excluded.write(tenant_id + b"\n")
                excluded.seek(0)
            copy_in(self.ctx.conn, "rc_excluded", excluded)
        self.sql("ANALYZE rc_candidates")
        self.sql("ANALYZE rc_excluded")

    def eligible(self) -> list[RowError]:
        """rc_eligible: candidates open after the run's writes, neither orphans nor row errors; the
        ids that cannot be part of an e-mail address are row errors of this step."""
        if self.ctx.dry_run:  # nothing was written: the status the planned writes would leave
            after_run = self.ctx.staged.status_after("rc_candidates")
        else:
            after_run = ('SELECT DISTINCT t.id, t.status::text AS status '
                         'FROM rc_candidates c JOIN "Tenant" t ON t.id = c.id')
        self.sql(f"""CREATE TEMP TABLE rc_eligible ON COMMIT DROP AS
                     SELECT id FROM ({after_run}) t WHERE status <> 'CLOSED'
                     AND NOT EXISTS (SELECT 1 FROM rc_excluded e WHERE e.id = t.id)""")
        bad_ids = self.sql("DELETE FROM rc_eligible WHERE id !~ %(pattern)s RETURNING id",
                           pattern=EMAIL_ID_PATTERN).scalars().all()
        self.sql("ANALYZE rc_eligible")
        return [RowError(tenant_id, INVALID_ID_FOR_EMAIL, _BAD_ID) for tenant_id in sorted(bad_ids)]

    def existing(self) -> list[RowError]:
        """What exists already, in any spelling: one connection per tenant (the oldest), and the
        addresses per (tenant, country). Duplicates (where the unique constraints are missing) are
        row errors of this step, never added to; the missing rows of those tenants are still ensured."""
        self.sql("""CREATE TEMP TABLE rc_conn ON COMMIT DROP AS
                    SELECT DISTINCT ON (c."tenantId") c."tenantId" AS tenant_id, c.id AS conn_id,
                           count(*) OVER (PARTITION BY c."tenantId") AS n
                    FROM inbound_connections c JOIN rc_eligible e ON e.id = c."tenantId"
                    WHERE lower(c.marketplace COLLATE "C") = 'amazon'
                    ORDER BY c."tenantId", c."createdAt", c.id""")
        self.sql("""CREATE TEMP TABLE rc_addr_have ON COMMIT DROP AS
                    SELECT a."tenantId" AS tenant_id, upper(a.country COLLATE "C") AS country, count(*) AS n
                    FROM inbound_addresses a JOIN rc_eligible e ON e.id = a."tenantId"
                    WHERE lower(a.marketplace COLLATE "C") = 'amazon'
                      AND upper(a.country COLLATE "C") = ANY(%(countries)s)
                    GROUP BY 1, 2""")
        connections = self.sql("SELECT tenant_id FROM rc_conn WHERE n > 1 ORDER BY tenant_id").scalars().all()
        addresses = self.sql("SELECT tenant_id, country, n FROM rc_addr_have WHERE n > 1 "
                             "ORDER BY tenant_id, country").all()
        _warn_duplicates(self.ctx.log, connections, addresses)
        self.summary.update(duplicate_connections=len(connections), duplicate_addresses=len(addresses))
        counts = dict(self.sql("SELECT tenant_id, n FROM rc_conn WHERE n > 1").all())
        return ([RowError(t, DUPLICATE_CONNECTION, f"{counts[t]} amazon connections for this tenant; the oldest "
                          "is used, none is added") for t in connections]
                + [RowError(t, DUPLICATE_ADDRESS, f"{n} {c} addresses for this tenant; none is added")
                   for t, c, n in addresses])

    def count_would_create(self) -> int:
        self.summary["connections_created"] = int(self.sql(
            "SELECT count(*) FROM rc_eligible e WHERE NOT EXISTS (SELECT 1 FROM rc_conn c WHERE c.tenant_id = e.id)"
        ).scalar())
        return int(self.sql("""SELECT count(*) FROM rc_eligible e CROSS JOIN unnest(%(countries)s::text[]) x(cc)
                               WHERE NOT EXISTS (SELECT 1 FROM rc_addr_have h
                                                 WHERE h.tenant_id = e.id AND h.country = x.cc)""").scalar())

    def create_connections(self) -> None:
        """A connection for each eligible tenant without one; the countries a connection lacks are
        appended (never replaced). An entry spelled otherwise ("fr") stays, and the canonical "FR"
        is added beside it: readers look for "FR"."""
        self.summary["connections_created"] = self.sql(f"""
            WITH made AS (
                INSERT INTO inbound_connections (id, "tenantId", marketplace, countries, status, "createdAt",
                                                 "updatedAt")
                SELECT {row_id_sql('row_number() OVER (ORDER BY e.id COLLATE "C")')}, e.id, %(connection_marketplace)s,
                       CAST(%(countries_json)s AS jsonb), 'DRAFT', {NOW_UTC}, {NOW_UTC}
                FROM rc_eligible e WHERE NOT EXISTS (SELECT 1 FROM rc_conn c WHERE c.tenant_id = e.id)
                ORDER BY e.id COLLATE "C"
                ON CONFLICT DO NOTHING
                RETURNING "tenantId", id)
            INSERT INTO rc_conn (tenant_id, conn_id, n) SELECT "tenantId", id, 1 FROM made""",
            connection_marketplace=CONNECTION_MARKETPLACE, id_prefix=id_prefix()).rowcount
        self.summary["connections_extended"] = self.sql(f"""
            UPDATE inbound_connections ic
            SET countries = ic.countries || m.missing, "updatedAt" = {NOW_UTC}
            FROM (SELECT c.conn_id, jsonb_agg(x.cc ORDER BY x.ord) AS missing
                  FROM rc_conn c JOIN inbound_connections cur ON cur.id = c.conn_id
                  CROSS JOIN unnest(%(countries)s::text[]) WITH ORDINALITY AS x(cc, ord)
                  WHERE jsonb_typeof(cur.countries) = 'array'
                    AND NOT cur.countries @> CAST(%(countries_json)s AS jsonb)
                    AND NOT cur.countries @> jsonb_build_array(x.cc)
                  GROUP BY c.conn_id) m
            WHERE ic.id = m.conn_id""").rowcount
        not_arrays = self.sql("""SELECT c.tenant_id FROM rc_conn c JOIN inbound_connections cur ON cur.id = c.conn_id
                                 WHERE jsonb_typeof(cur.countries) <> 'array' ORDER BY 1""").scalars().all()
        if not_arrays:
            self.ctx.log.warning("inbound.countries_not_an_array", count=len(not_arrays),
                                 tenant_ids=list(not_arrays[:_SAMPLE]),
                                 detail="the connection's countries is not a JSON array; left as it is, addresses "
                                        "still ensured")

    def create_addresses(self) -> tuple[int, Callable[[], None]]:
        """The missing addresses, with tokens from `secrets`; their number, and the announcement of
        those really inserted (to run after the commit)."""
        missing = temp_file()
        # In tenant order: the addresses are inserted in this order (see row_id_sql).
        count = copy_out(self.ctx.conn, Query("""SELECT c.tenant_id, c.conn_id, x.cc FROM rc_conn c
                                 CROSS JOIN unnest(%(countries)s::text[]) WITH ORDINALITY x(cc, ord)
                                 WHERE NOT EXISTS (SELECT 1 FROM rc_addr_have h
                                                   WHERE h.tenant_id = c.tenant_id AND h.country = x.cc)
                                 ORDER BY c.tenant_id COLLATE "C", x.ord""",
                                                  {"countries": list(self.countries)}), missing)
        new_rows = _with_tokens(missing, count, self.domain)
        discard(missing)
        self.sql("CREATE TEMP TABLE rc_addr_new (tenant_id text, conn_id text, country text, token text, email text) "
                 "ON COMMIT DROP")
        copy_in(self.ctx.conn, "rc_addr_new", new_rows)
        inserted = self.sql(f"""
            INSERT INTO inbound_addresses (id, "connectionId", "tenantId", marketplace, country, token, "emailAddress",
                                           "createdAt", "updatedAt")
            SELECT {row_id_sql("row_number() OVER ()")}, conn_id, tenant_id, %(address_marketplace)s, country,
                   token, email, {NOW_UTC}, {NOW_UTC}
            FROM rc_addr_new ON CONFLICT DO NOTHING""",  # rc_addr_new is read in the order it was written
            address_marketplace=ADDRESS_MARKETPLACE, id_prefix=id_prefix()).rowcount
        not_ours: set[bytes] = set()
        if inserted < count:  # a concurrent writer took some (tenant, country) first: they exist, not ours
            not_ours = {row[0].encode() for row in self.sql("""
                SELECT n.email FROM rc_addr_new n
                WHERE NOT EXISTS (SELECT 1 FROM inbound_addresses a WHERE a."emailAddress" = n.email)""")}
        return inserted, lambda: _announce(self.ctx.log, new_rows, not_ours)


def ensure(ctx: HookContext, countries: tuple[str, ...], domain: str, candidates: IO[bytes]) -> HookResult:
    """Ensure the addresses for the candidate tenants (ids, one per line, found before the writes)
    plus the ones this run creates or reopens. In a dry run, count what would be created and write
    nothing."""
    step = _Ensure(ctx, countries, domain)
    step.load_candidates(candidates)
    result = HookResult(HOOK_NAME, row_errors=step.eligible(), summary=step.summary)
    result.row_errors += step.existing()
    if ctx.dry_run:
        result.counts[INBOUND_CREATED] = step.count_would_create()
        return result
    step.create_connections()
    result.counts[INBOUND_CREATED], result.after_commit = step.create_addresses()
    return result


def _with_tokens(missing: IO[bytes], count: int, domain: str) -> IO[bytes]:
    """COPY lines (tenant, connection, country, token, email) for each missing address, streamed."""
    out = temp_file()
    at_domain = b"@" + domain.encode()
    write = out.write
    with temp_space():
        missing.seek(0)
        for line, token in zip(missing, tokens(count), strict=True):
            tenant_id, conn_id, country = line[:-1].split(b"\t")
            address = b"amazon." + tenant_id + b"." + country.lower() + b"." + token + at_domain
            write(b"\t".join((tenant_id, conn_id, country, token, address)) + b"\n")
        out.seek(0)
    return out


def _announce(log: Any, new_rows: IO[bytes], not_ours: set[bytes]) -> None:
    """One `inbound.created` event per address this run inserted (after the commit)."""
    try:
        new_rows.seek(0)
        for line in new_rows:
            tenant_id, _, country, _, address = line[:-1].split(b"\t")
            if address not in not_ours:
                log.info("inbound.created", tenant_id=tenant_id.decode(), country=country.decode(),
                         marketplace=ADDRESS_MARKETPLACE, email=address.decode())
    finally:
        discard(new_rows)


def _warn_duplicates(log: Any, connections: list[str], addresses: list[Any]) -> None:
    if connections:
        log.warning("inbound.duplicates", kind="connection", count=len(connections),
                    tenant_ids=list(connections[:_SAMPLE]),
                    detail="several amazon connections for one tenant; the oldest is used, none is added")
    if addresses:
        log.warning("inbound.duplicates", kind="address", count=len(addresses),
                    addresses=[{"tenant_id": t, "country": c, "rows": int(n)} for t, c, n in addresses[:_SAMPLE]],
                    detail="several addresses for one tenant and country; none is added")
