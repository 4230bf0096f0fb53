"""Amazon inbound e-mail addresses for every active tenant, set-based (SPEC §3 "Inbound addresses").

Runs inside the run's marketplace transaction after the tenant writes. Eligible: tenants in scope
that exist in the marketplace, are not CLOSED, and are neither orphans nor row errors. For them,
per country: one `inbound_connections` row (marketplace `amazon`, its `countries` array extended,
never replaced) and one `inbound_addresses` row (marketplace `AMAZON`). Existing rows are matched
case-insensitively and never regenerated; duplicates (environments without the unique constraints)
are reported, never added to. Only the missing rows pass through Python, to get their tokens from
`secrets`; everything else is a handful of statements whatever the tenant count.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Iterator
from typing import IO, Any

import sqlalchemy as sa

from reconcile.cancel import Cancellation
from reconcile.db import DatabaseUrl, connect, translate_db_errors
from reconcile.errors import DatabaseError
from reconcile.mapping import INVALID_ID_FOR_EMAIL
from reconcile.pgcopy import Query, copy_in, copy_out
from reconcile.reconciler import AfterWrite, HookContext
from reconcile.scope import Scope
from reconcile.settings import Settings
from reconcile.tempfiles import discard, temp_file, temp_space
from reconcile.watchdog import WatchedConnection

EMAIL_ID_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_-]*$"
TOKEN_ALPHABET = b"abcdefghijklmnopqrstuvwxyz0123456789"
TOKEN_LENGTH = 6
CONNECTION_MARKETPLACE = "amazon"
ADDRESS_MARKETPLACE = "AMAZON"
_SAMPLE = 20
# The candidate scan is waited for at most this long once the run is done with it (its connection is
# cut first); while the run needs it, the watchdog and statement_timeout bound it.
SCAN_JOIN_BOUND_S = 15.0

# 252 = 7 * 36: dropping bytes >= 252 leaves every alphabet letter equally likely.
_TOKEN_TABLE = bytes(TOKEN_ALPHABET[b % 36] if b < 252 else 0 for b in range(256))
_TOKEN_DROP = bytes(range(252, 256))

_NOW = "timezone('UTC', statement_timestamp())"


def tokens(count: int) -> Iterator[bytes]:
    """`count` tokens of 6 characters from [a-z0-9], drawn from `secrets` in bulk."""
    need = count * TOKEN_LENGTH
    pool = b""
    while len(pool) < need:
        pool += secrets.token_bytes(need - len(pool) + 16).translate(_TOKEN_TABLE, _TOKEN_DROP)
    for start in range(0, need, TOKEN_LENGTH):
        yield pool[start:start + TOKEN_LENGTH]


def inbound_hook(settings: Settings, countries: tuple[str, ...] | None = None) -> AfterWrite | None:
    """The run's after-write hook when inbound countries are asked for, else None."""
    wanted = settings.inbound_countries if countries is None else countries
    if not wanted:
        return None
    assert all(len(c) == 2 and c.isalpha() and c.isupper() for c in wanted)  # validated by settings
    return InboundEnsurer(wanted, settings.inbound_domain, settings.connect_retry_s)


class InboundEnsurer:
    """The after-write hook. `prepare` finds the candidate tenants (the expensive, read-only
    aggregate) on a connection of its own while the snapshot runs; the hook then adds what the
    run itself creates or reopens, and does the exact work for those tenants only, inside the
    write transaction. A row changed by someone else in between is caught by the re-checks at
    insert time, or by the next run."""

    def __init__(self, countries: tuple[str, ...], domain: str, retry_s: float = 0.0) -> None:
        self.countries = countries
        self.domain = domain
        self.retry_s = retry_s
        self._candidates: IO[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._connection: object | None = None
        self._error: BaseException | None = None

    def prepare(self, engine: sa.Engine, db: DatabaseUrl, scope: Scope,
                cancel: Cancellation | None = None) -> Callable[[], None]:
        def scan() -> None:
            try:
                with connect(engine, db, retry_s=self.retry_s, what="marketplace", cancel=cancel) as conn, \
                        translate_db_errors("inbound scan failed", db), conn.begin():
                    self._connection = conn.connection.dbapi_connection
                    if cancel is not None:
                        cancel.register(self._connection)
                    unique = _connection_unique(conn)
                    for statement in _AGGREGATE_SESSION:
                        conn.exec_driver_sql(statement)
                    spool = temp_file()
                    self._candidates = spool
                    copy_out(conn, _candidates_sql(scope, self.countries, unique), spool)
            except BaseException as exc:  # handed to the run's thread in __call__
                self._error = exc

        self._thread = threading.Thread(target=scan, name="inbound-scan", daemon=True)
        self._thread.start()
        return self._close

    def _join(self) -> None:
        if self._thread is None:
            return
        self._thread.join(SCAN_JOIN_BOUND_S)
        if self._thread.is_alive():
            raise DatabaseError(f"the inbound scan did not finish within {SCAN_JOIN_BOUND_S:g}s after the run")

    def _close(self) -> None:
        """After the run, however it ended: a scan still going is cut, then waited for (bounded)."""
        connection = self._connection
        if self._thread is not None and self._thread.is_alive() and isinstance(connection, WatchedConnection):
            connection.abort("the run ended before the inbound scan")
        try:
            self._join()
        finally:
            if self._candidates is not None:
                discard(self._candidates)

    def __call__(self, ctx: HookContext) -> Callable[[], None] | None:
        if self._thread is None:  # not prepared (a caller outside run_reconcile): scan now, in the transaction
            self._candidates = _copy_out(ctx, _candidates_sql(ctx.scope, self.countries,
                                                               _connection_unique(ctx.conn)))[0]
        else:
            # The scan's own statement_timeout and the watchdog bound it; the join bound is a backstop.
            self._thread.join(SCAN_JOIN_BOUND_S + ctx.network_timeout_s)
            if self._thread.is_alive():
                raise DatabaseError("the inbound scan did not finish in time")
            if self._error is not None:
                raise self._error
        assert self._candidates is not None
        self._candidates.seek(0)
        return ensure(ctx, self.countries, self.domain, self._candidates)


def _candidates_sql(scope: Scope, countries: tuple[str, ...], connection_unique: bool) -> Query:
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


def _connection_unique(conn: sa.Connection) -> bool:
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
_AGGREGATE_SESSION = ("SET LOCAL enable_sort = off", "SET LOCAL jit = off",
                      "SET LOCAL max_parallel_workers_per_gather = 0", "SET LOCAL work_mem = '128MB'")


def _copy_out(ctx: HookContext, query: Query) -> tuple[IO[bytes], int]:
    spool = temp_file()
    rows = copy_out(ctx.conn, query, spool)
    with temp_space():
        spool.seek(0)
    return spool, rows


def _sql(ctx: HookContext, statement: str, params: dict[str, Any] | None = None) -> Any:
    return ctx.conn.exec_driver_sql(statement, params or {})


def ensure(ctx: HookContext, countries: tuple[str, ...], domain: str,
           candidates: IO[bytes]) -> Callable[[], None] | None:
    """Ensure the addresses for the candidate tenants (ids, one per line, found before the
    writes) plus the ones this run creates or reopens. In a dry run, count what would be
    created and write nothing."""
    plan, log = ctx.plan, ctx.log
    params = {"countries": list(countries), "countries_json": json.dumps(list(countries))}
    # The completeness aggregate over every inbound row stays in memory instead of spilling.
    _sql(ctx, "SET LOCAL work_mem = '128MB'")

    _sql(ctx, "CREATE TEMP TABLE rc_candidates (id text) ON COMMIT DROP")
    copy_in(ctx.conn, "rc_candidates", candidates)
    _sql(ctx, """INSERT INTO rc_candidates SELECT id FROM rc_create
                 UNION ALL SELECT id FROM rc_update WHERE status = 'CLOSED' AND new_status <> 'CLOSED'""")
    # Not eligible: orphans and row errors.
    _sql(ctx, "CREATE TEMP TABLE rc_excluded (id text) ON COMMIT DROP")
    with temp_file() as excluded:
        with temp_space():
            for spool in (plan.orphan_spool, plan.errors):
                for line in spool.rewind():
                    excluded.write(line.split(b"\t", 1)[0].rstrip(b"\n") + b"\n")
            excluded.seek(0)
        copy_in(ctx.conn, "rc_excluded", excluded)
    _sql(ctx, "ANALYZE rc_candidates")
    _sql(ctx, "ANALYZE rc_excluded")
    if ctx.dry_run:
        # Nothing was written: read the status the planned writes would leave.
        after_run = """SELECT DISTINCT c.id,
                              CASE WHEN a.id IS NOT NULL THEN 'CLOSED' WHEN u.id IS NOT NULL THEN u.new_status
                                   WHEN t.id IS NOT NULL THEN t.status::text ELSE k.status END AS status
                       FROM rc_candidates c LEFT JOIN "Tenant" t ON t.id = c.id
                       LEFT JOIN rc_archive a ON a.id = c.id LEFT JOIN rc_update u ON u.id = c.id
                       LEFT JOIN rc_create k ON k.id = c.id"""
    else:
        after_run = """SELECT DISTINCT t.id, t.status::text AS status
                       FROM rc_candidates c JOIN "Tenant" t ON t.id = c.id"""
    _sql(ctx, f"""CREATE TEMP TABLE rc_eligible ON COMMIT DROP AS
                  SELECT id FROM ({after_run}) t WHERE status <> 'CLOSED'
                  AND NOT EXISTS (SELECT 1 FROM rc_excluded e WHERE e.id = t.id)""")
    bad_ids = _sql(ctx, "DELETE FROM rc_eligible WHERE id !~ %(pattern)s RETURNING id",
                   {"pattern": EMAIL_ID_PATTERN}).scalars().all()
    for tenant_id in sorted(bad_ids):
        ctx.report.add_inbound_error(tenant_id, INVALID_ID_FOR_EMAIL,
                                     "id cannot be part of an e-mail address (allowed: letters, digits, "
                                     "'_' and '-', starting with a letter or digit)", log)
    _sql(ctx, "ANALYZE rc_eligible")

    # One connection per tenant: the oldest existing one, in any spelling of `amazon`.
    _sql(ctx, """CREATE TEMP TABLE rc_conn ON COMMIT DROP AS
                 SELECT DISTINCT ON (c."tenantId") c."tenantId" AS tenant_id, c.id AS conn_id,
                        count(*) OVER (PARTITION BY c."tenantId") AS n
                 FROM inbound_connections c JOIN rc_eligible e ON e.id = c."tenantId"
                 WHERE lower(c.marketplace COLLATE "C") = 'amazon'
                 ORDER BY c."tenantId", c."createdAt", c.id""")
    duplicate_connections = _sql(ctx, "SELECT tenant_id FROM rc_conn WHERE n > 1 ORDER BY tenant_id").scalars().all()
    missing_connections = _sql(ctx, """SELECT count(*) FROM rc_eligible e
                                       WHERE NOT EXISTS (SELECT 1 FROM rc_conn c WHERE c.tenant_id = e.id)""").scalar()

    # Addresses that exist per (tenant, country), in any spelling.
    _sql(ctx, """CREATE TEMP TABLE rc_addr_have ON COMMIT DROP AS
                 SELECT a."tenantId" AS tenant_id, upper(a.country COLLATE "C") AS country, count(*) AS n
                 FROM inbound_addresses a JOIN rc_eligible e ON e.id = a."tenantId"
                 WHERE lower(a.marketplace COLLATE "C") = 'amazon' AND upper(a.country COLLATE "C") = ANY(%(countries)s)
                 GROUP BY 1, 2""", params)
    duplicate_addresses = _sql(ctx, """SELECT tenant_id, country, n FROM rc_addr_have WHERE n > 1
                                       ORDER BY tenant_id, country""").all()
    _warn_duplicates(log, duplicate_connections, duplicate_addresses)

    if ctx.dry_run:
        would_create = _sql(ctx, """SELECT count(*) FROM rc_eligible e CROSS JOIN unnest(%(countries)s::text[]) x(cc)
                                    WHERE NOT EXISTS (SELECT 1 FROM rc_addr_have h
                                                      WHERE h.tenant_id = e.id AND h.country = x.cc)""",
                            params).scalar()
        ctx.report.counts["inbound_created"] = int(would_create)
        ctx.report.extra["inbound"] = {"countries": list(countries), "connections_created": int(missing_connections),
                                       "duplicate_connections": len(duplicate_connections),
                                       "duplicate_addresses": len(duplicate_addresses)}
        return None

    created_connections = _sql(ctx, f"""
        WITH made AS (
            INSERT INTO inbound_connections (id, "tenantId", marketplace, countries, status, "createdAt", "updatedAt")
            SELECT replace(gen_random_uuid()::text, '-', ''), e.id, %(connection_marketplace)s,
                   CAST(%(countries_json)s AS jsonb), 'DRAFT', {_NOW}, {_NOW}
            FROM rc_eligible e WHERE NOT EXISTS (SELECT 1 FROM rc_conn c WHERE c.tenant_id = e.id)
            ON CONFLICT DO NOTHING
            RETURNING "tenantId", id)
        INSERT INTO rc_conn (tenant_id, conn_id, n) SELECT "tenantId", id, 1 FROM made""",
        {**params, "connection_marketplace": CONNECTION_MARKETPLACE}).rowcount
    # Extend (never replace) the countries of the connections that lack some. An entry spelled
    # otherwise ("fr") stays, and the canonical "FR" is added beside it: readers look for "FR".
    extended = _sql(ctx, f"""
        UPDATE inbound_connections ic
        SET countries = ic.countries || m.missing, "updatedAt" = {_NOW}
        FROM (SELECT c.conn_id, jsonb_agg(x.cc ORDER BY x.ord) AS missing
              FROM rc_conn c JOIN inbound_connections cur ON cur.id = c.conn_id
              CROSS JOIN unnest(%(countries)s::text[]) WITH ORDINALITY AS x(cc, ord)
              WHERE jsonb_typeof(cur.countries) = 'array'
                AND NOT cur.countries @> CAST(%(countries_json)s AS jsonb)
                AND NOT cur.countries @> jsonb_build_array(x.cc)
              GROUP BY c.conn_id) m
        WHERE ic.id = m.conn_id""", params).rowcount
    not_arrays = _sql(ctx, """SELECT c.tenant_id FROM rc_conn c JOIN inbound_connections cur ON cur.id = c.conn_id
                              WHERE jsonb_typeof(cur.countries) <> 'array' ORDER BY 1""").scalars().all()
    if not_arrays:
        log.warning("inbound.countries_not_an_array", count=len(not_arrays), tenant_ids=list(not_arrays[:_SAMPLE]),
                    detail="the connection's countries is not a JSON array; left as it is, addresses still ensured")

    missing, missing_count = _copy_out(ctx, Query("""SELECT c.tenant_id, c.conn_id, x.cc FROM rc_conn c
                                CROSS JOIN unnest(%(countries)s::text[]) x(cc)
                                WHERE NOT EXISTS (SELECT 1 FROM rc_addr_have h
                                                  WHERE h.tenant_id = c.tenant_id AND h.country = x.cc)""",
                                                    {"countries": list(countries)}))
    new_rows = _with_tokens(missing, missing_count, domain)
    discard(missing)
    _sql(ctx, """CREATE TEMP TABLE rc_addr_new (tenant_id text, conn_id text, country text, token text,
                                               email text) ON COMMIT DROP""")
    copy_in(ctx.conn, "rc_addr_new", new_rows)
    inserted = _sql(ctx, f"""
        INSERT INTO inbound_addresses (id, "connectionId", "tenantId", marketplace, country, token, "emailAddress",
                                       "createdAt", "updatedAt")
        SELECT replace(gen_random_uuid()::text, '-', ''), conn_id, tenant_id, %(address_marketplace)s, country, token,
               email, {_NOW}, {_NOW}
        FROM rc_addr_new ON CONFLICT DO NOTHING""", {"address_marketplace": ADDRESS_MARKETPLACE}).rowcount
    skipped: set[bytes] = set()
    if inserted < missing_count:
        # A concurrent writer took some (tenant, country) first: they exist, just not ours.
        skipped = {row[0].encode() for row in _sql(ctx, """
            SELECT n.email FROM rc_addr_new n
            WHERE NOT EXISTS (SELECT 1 FROM inbound_addresses a WHERE a."emailAddress" = n.email)""")}
    ctx.report.counts["inbound_created"] = inserted
    ctx.report.extra["inbound"] = {"countries": list(countries), "connections_created": created_connections,
                                   "connections_extended": extended,
                                   "duplicate_connections": len(duplicate_connections),
                                   "duplicate_addresses": len(duplicate_addresses)}

    def announce() -> None:
        new_rows.seek(0)
        try:
            for line in new_rows:
                tenant_id, _, country, _, address = line[:-1].split(b"\t")
                if address not in skipped:
                    log.info("inbound.created", tenant_id=tenant_id.decode(), country=country.decode(),
                             marketplace=ADDRESS_MARKETPLACE, email=address.decode())
        finally:
            discard(new_rows)

    return announce


def _with_tokens(missing: IO[bytes], count: int, domain: str) -> IO[bytes]:
    """COPY lines (tenant, connection, country, token, email) for each missing address, streamed."""
    out = temp_file()
    at_domain = b"@" + domain.encode()
    write = out.write
    with temp_space():
        for line, token in zip(missing, tokens(count), strict=True):
            tenant_id, conn_id, country = line[:-1].split(b"\t")
            address = b"amazon." + tenant_id + b"." + country.lower() + b"." + token + at_domain
            write(b"\t".join((tenant_id, conn_id, country, token, address)) + b"\n")
        out.seek(0)
    return out


def _warn_duplicates(log: Any, connections: list[str], addresses: list[Any]) -> None:
    if connections:
        log.warning("inbound.duplicates", kind="connection", count=len(connections),
                    tenant_ids=list(connections[:_SAMPLE]),
                    detail="several amazon connections for one tenant; the oldest is used, none is added")
    if addresses:
        log.warning("inbound.duplicates", kind="address", count=len(addresses),
                    addresses=[{"tenant_id": t, "country": c, "rows": int(n)} for t, c, n in addresses[:_SAMPLE]],
                    detail="several addresses for one tenant and country; none is added")
