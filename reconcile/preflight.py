"""Checks made against the live databases: the mapping's labels before every run, and `check`, the
read-only preflight an operator (or a Kubernetes Job) runs before the first run and after every
change of credentials.

The mapping's targets must be labels of the marketplace's enums: `plan` would otherwise report a
plan that `run` cannot commit ("invalid input value for enum").
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from reconcile.db import lock
from reconcile.db.cancel import Cancellation, Cancelled
from reconcile.db.engines import reading
from reconcile.errors import ConfigError, DatabaseError
from reconcile.mapping import ARCHIVED, CLOSED, Mapping
from reconcile.settings import Settings
from reconcile.shard import Shard

PLAN_ENUM = "BillingPlan"
STATUS_ENUM = "TenantStatus"

_LABELS = """
SELECT t.typname::text, e.enumlabel::text FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
WHERE t.oid = to_regtype(%(plan_type)s) OR t.oid = to_regtype(%(status_type)s)
ORDER BY t.typname, e.enumsortorder"""


def enum_labels(conn: sa.Connection) -> dict[str, list[str]]:
    """Labels of the marketplace's "BillingPlan" and "TenantStatus" (in the session's search_path)."""
    rows = conn.exec_driver_sql(_LABELS, {"plan_type": f'"{PLAN_ENUM}"', "status_type": f'"{STATUS_ENUM}"'})
    labels: dict[str, list[str]] = {PLAN_ENUM: [], STATUS_ENUM: []}
    for type_name, label in rows:
        labels.setdefault(type_name, []).append(label)
    return labels


def mapping_targets(mapping: Mapping) -> dict[str, set[str]]:
    """Every label a run may write: mapped plans and statuses, the defaults for empty values, and
    CLOSED (what archiving writes)."""
    statuses = {*mapping.status.values(), mapping.status_when_empty, CLOSED} - {ARCHIVED}
    return {PLAN_ENUM: {*mapping.plan.values(), mapping.plan_when_empty}, STATUS_ENUM: statuses}


def label_problems(mapping: Mapping, labels: dict[str, list[str]]) -> list[str]:
    problems = []
    for type_name, wanted in mapping_targets(mapping).items():
        have = labels.get(type_name) or []
        if not have:
            problems.append(f'the marketplace database has no enum type "{type_name}"')
            continue
        for label in sorted(wanted - set(have)):
            problems.append(f'mapping target {label!r} is not a label of the marketplace enum "{type_name}" '
                            f"(its labels: {', '.join(have)})")
    return problems


def check_mapping_labels(conn: sa.Connection, mapping: Mapping) -> None:
    """Raise ConfigError (exit 2) naming every mapping target the marketplace enums lack."""
    problems = label_problems(mapping, enum_labels(conn))
    if problems:
        raise ConfigError("; ".join(problems))


# -- `check` -----------------------------------------------------------------------------------------

# Tables and the columns the tool reads or writes in them.
PRODUCT_TABLES = {"tenants": ("id", "name", "plan", "status", "updated_at")}
MARKETPLACE_TABLES = {'"Tenant"': ("id", "slug", "name", "plan", "status", "createdAt", "updatedAt")}
INBOUND_TABLES = {
    "inbound_connections": ("id", "tenantId", "marketplace", "countries", "status", "createdAt", "updatedAt"),
    "inbound_addresses": ("id", "connectionId", "tenantId", "marketplace", "country", "token", "emailAddress",
                          "createdAt", "updatedAt"),
}
_COLUMNS = """SELECT a.attname::text FROM pg_attribute a
              WHERE a.attrelid = to_regclass(%(table)s) AND a.attnum > 0 AND NOT a.attisdropped"""


@dataclass
class Finding:
    """One check: what was checked, whether it passed, and what an operator needs to know."""

    check: str
    ok: bool
    detail: str = ""
    problem: bool = True  # False: worth knowing, never a failed check (a held lock, a small clock skew)


@dataclass
class Preflight:
    findings: list[Finding] = field(default_factory=list)
    databases: dict[str, dict[str, Any]] = field(default_factory=dict)
    unreachable: bool = False

    def add(self, check: str, ok: bool, detail: str = "", problem: bool = True) -> None:
        self.findings.append(Finding(check, ok, detail, problem))

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok and f.problem]


def server_facts(conn: sa.Connection) -> dict[str, Any]:
    """Version, clock and who we are, with the moment they were read (for the clock offset)."""
    before = time.time()
    version, now, user = conn.exec_driver_sql(
        "SELECT current_setting('server_version'), extract(epoch FROM clock_timestamp()), current_user").one()
    return {"version": version, "user": user, "clock": float(now), "read_at": (before + time.time()) / 2}


def check_tables(conn: sa.Connection, report: Preflight, where: str, tables: dict[str, tuple[str, ...]],
                 privileges: str) -> None:
    """Each table exists with its columns, and the role has `privileges` on it."""
    for table, columns in tables.items():
        have = set(conn.exec_driver_sql(_COLUMNS, {"table": table}).scalars())
        if not have:
            report.add(f"{where} table {table}", False, "missing (or not visible to this role)")
            continue
        missing = [c for c in columns if c not in have]
        report.add(f"{where} table {table}", not missing, f"missing columns: {', '.join(missing)}" if missing else "")
        lacking = [p for p in privileges.split(",") if not conn.exec_driver_sql(
            "SELECT has_table_privilege(to_regclass(%(table)s), %(privilege)s)",
            {"table": table, "privilege": p}).scalar()]
        report.add(f"{where} grants on {table}", not lacking,
                   f"missing: GRANT {', '.join(lacking)} ON {table}" if lacking else privileges.replace(",", ", "))


def check_marketplace_extras(conn: sa.Connection, report: Preflight, mapping: Mapping) -> None:
    """The enum labels the mapping writes, and TEMPORARY (the plan is staged in temp tables)."""
    problems = label_problems(mapping, enum_labels(conn))
    report.add("mapping targets are marketplace enum labels", not problems, "; ".join(problems))
    temporary = conn.exec_driver_sql("SELECT has_database_privilege(current_database(), 'TEMPORARY')").scalar()
    report.add("TEMPORARY on the marketplace database", bool(temporary),
               "" if temporary else "missing: GRANT TEMPORARY ON DATABASE <marketplace db> (the plan is staged "
                                    "in temp tables)")


def check_clocks(report: Preflight) -> None:
    product, market = report.databases.get("product"), report.databases.get("marketplace")
    if not product or not market or "clock" not in product or "clock" not in market:
        return
    # Each clock read minus the local moment it was read at: the local clock cancels out.
    offset = (product["clock"] - product["read_at"]) - (market["clock"] - market["read_at"])
    report.databases["clock_offset_s"] = round(offset, 3)
    report.add("clock offset between the databases", abs(offset) < 5, f"{offset:+.3f} s (product - marketplace)",
               problem=False)


def check_lock(conn: sa.Connection, report: Preflight, shard: Shard) -> None:
    """Whether a run could take the lock now, and who holds it if not (never a failed check)."""
    keys = dict.fromkeys((lock.lock_key(Shard()), lock.lock_key(shard)))
    holders = [holder for key in keys for holder in lock.holders(conn, key)]
    report.databases.setdefault("marketplace", {})["lock_holders"] = holders
    if not holders:
        report.add("run lock", True, "free", problem=False)
        return
    first = holders[0]
    report.add("run lock", False, f"held by pid {first['pid']} ({first['application_name'] or 'no application_name'}) "
                                  f"from {first['client_addr']} connected since {first['since']}", problem=False)


CHECK_STOPPED = "check stopped ({reason}); it only reads, nothing was changed"


def preflight(settings: Settings, cancel: Cancellation | None = None) -> Preflight:
    """`check`: both databases reachable (versions, clock offset), the tables, columns and enum labels
    the tool needs, the mapping's targets, the grants, and the run lock. Reads only; takes no lock.
    `cancel` stops it in any step (Cancelled, exit 7), as it stops a run."""
    report = Preflight()
    for what in ("product", "marketplace"):
        db = settings.require_product() if what == "product" else settings.require_marketplace()
        try:
            with reading(settings, db, what, cancel=cancel, stopped=CHECK_STOPPED,
                         doing=f"checking the {what} database failed") as conn:
                facts = server_facts(conn)
                source = settings.product_from if what == "product" else settings.marketplace_from
                report.databases[what] = {"db": db.display, "from": source, **facts}
                report.add(f"{what} database reachable", True, f"PostgreSQL {facts['version']} as {facts['user']}")
                _check_database(conn, report, what, settings)
        except Cancelled:
            raise  # a stop, not an unreachable database
        except DatabaseError as exc:
            report.unreachable = True
            report.databases[what] = {"db": db.display}
            report.add(f"{what} database reachable", False, str(exc))
    check_clocks(report)
    return report


def _check_database(conn: sa.Connection, report: Preflight, what: str, settings: Settings) -> None:
    if what == "product":
        check_tables(conn, report, "product", PRODUCT_TABLES, "SELECT")
        return
    check_tables(conn, report, "marketplace", MARKETPLACE_TABLES, "SELECT,INSERT,UPDATE")
    if settings.inbound_countries:
        check_tables(conn, report, "marketplace", INBOUND_TABLES, "SELECT,INSERT,UPDATE")
    check_marketplace_extras(conn, report, settings.mapping)
    check_lock(conn, report, settings.shard)
