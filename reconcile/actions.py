"""Every kind of action a run can take or report, defined once.

A kind says how its rows are spooled by the plan (`columns`), staged (`table`), written
(`write_sql`), counted and listed in the report (`counted_as`, `entry`), announced after the
commit (`event`, `event_fields`) and named for people (`verb`). The plan, the staging, the writes,
the tally, the report's keys, the HTTP answers, the console rendering and the demo all read this
table: a new kind is one entry here plus the diff rule that produces it.

Rows are COPY text fields (bytes, still escaped, see reconcile.copytext) in the order of `columns`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reconcile import copytext
from reconcile.db.sql import NOW_UTC

Row = list[bytes]
_FIELDS = ("name", "plan", "status")


@dataclass(frozen=True)
class Kind:
    name: str                       # what the diff calls it: "create"
    counted_as: str                 # its key in counts and its report list: "created"
    verb: str                       # for people: "create"
    symbol: str = ""                # before its sentence in the console rendering: "+"; "" if it has none
    columns: tuple[str, ...] = ()   # spool layout; () for a kind that is only counted
    table: str | None = None        # its staging temp table (write kinds)
    write_sql: str | None = None    # compare-and-set statement; returns the ids it could NOT apply
    event: str | None = None        # the per-tenant event of an applied action
    listed: bool = True             # has an id list in the report
    entry: Callable[[Row], Any] = field(default=lambda row: copytext.decode(row[0]))
    event_fields: Callable[[Row], dict[str, Any]] = field(default=lambda row: {})

    @property
    def writes(self) -> bool:
        return self.write_sql is not None

    def tenant_id(self, row: Row) -> str:
        return copytext.decode(row[0])

    def columns_sql(self) -> str:
        return ", ".join(f"{column} {'boolean' if column == 'orphan' else 'text'}" for column in self.columns)


def changes(row: Row) -> dict[str, list[str | None]]:
    """[old, new] per differing field of an update row (old = the marketplace row as read; None for
    a column that held NULL)."""
    out: dict[str, list[str | None]] = {}
    for i, name in enumerate(_FIELDS):
        old, new = row[1 + i], row[4 + i]
        if old != new:
            out[name] = [copytext.value(old), copytext.value(new)]
    return out


def _error_entry(row: Row) -> dict[str, str]:
    return {"id": copytext.decode(row[0]), "error": row[1].decode(), "detail": copytext.decode(row[2])}


_CAS = ("t.name IS NOT DISTINCT FROM {a}.name AND t.plan::text IS NOT DISTINCT FROM {a}.plan "
        "AND t.status::text IS NOT DISTINCT FROM {a}.status")

# Compare-and-set: each statement applies a planned row only if the marketplace row still holds the
# values read in the snapshot (NULL-safe: a column holding NULL where NOT NULL was dropped is
# matched as read, so the row is repaired instead of conflicting every night), and returns the
# planned ids it could not apply (the conflicts).
CREATE = Kind(
    "create", "created", "create", "+", ("id", "slug", "name", "plan", "status"), "rc_create",
    f"""WITH done AS (
    INSERT INTO "Tenant" (id, slug, name, plan, status, "createdAt", "updatedAt")
    SELECT id, slug, name, plan::"BillingPlan", status::"TenantStatus", {NOW_UTC}, {NOW_UTC} FROM rc_create
    ON CONFLICT DO NOTHING
    RETURNING id
)
SELECT c.id FROM rc_create c WHERE NOT EXISTS (SELECT 1 FROM done WHERE done.id = c.id)""",
    "tenant.created",
    event_fields=lambda row: {"name": copytext.decode(row[2]), "plan": row[3].decode(), "status": row[4].decode()},
)
UPDATE = Kind(
    "update", "updated", "update", "~", ("id", "name", "plan", "status", "new_name", "new_plan", "new_status"),
    "rc_update",
    f"""WITH done AS (
    UPDATE "Tenant" t
    SET name = u.new_name, plan = u.new_plan::"BillingPlan", status = u.new_status::"TenantStatus",
        "updatedAt" = {NOW_UTC}
    FROM rc_update u
    WHERE t.id = u.id AND {_CAS.format(a="u")}
    RETURNING t.id
)
SELECT u.id FROM rc_update u WHERE NOT EXISTS (SELECT 1 FROM done WHERE done.id = u.id)""",
    "tenant.updated",
    entry=lambda row: {"id": copytext.decode(row[0]), "changes": changes(row)},
    event_fields=lambda row: {"changes": changes(row)},
)
ARCHIVE = Kind(
    "archive", "archived", "archive", "-", ("id", "name", "plan", "status", "orphan"), "rc_archive",
    f"""WITH done AS (
    UPDATE "Tenant" t
    SET status = 'CLOSED', "updatedAt" = {NOW_UTC}
    FROM rc_archive a
    WHERE t.id = a.id AND {_CAS.format(a="a")}
    RETURNING t.id
)
SELECT a.id FROM rc_archive a WHERE NOT EXISTS (SELECT 1 FROM done WHERE done.id = a.id)""",
    "tenant.archived",
    event_fields=lambda row: {"previous_status": copytext.value(row[3]), "orphan": row[4] == b"t"},
)
ERROR = Kind("error", "errors", "row error", "!", ("id", "error", "detail"), event="tenant.error", entry=_error_entry,
             event_fields=lambda row: {"error": row[1].decode(), "detail": copytext.decode(row[2])})
ORPHAN = Kind("orphan", "orphans", "orphan", "*", ("id",))
SKIP = Kind("skip", "skipped", "skip", columns=("id",))
UNCHANGED = Kind("unchanged", "unchanged", "unchanged", listed=False)

KINDS = (CREATE, UPDATE, ARCHIVE, UNCHANGED, ORPHAN, ERROR, SKIP)
BY_NAME = {kind.name: kind for kind in KINDS}
WRITES = tuple(kind for kind in KINDS if kind.writes)
SPOOLED = tuple(kind for kind in KINDS if kind.columns)

# Outcomes that are not kinds of their own: lost compare-and-sets and the inbound step's figures.
CONFLICTS = "conflicts"
INBOUND_CREATED = "inbound_created"
INBOUND_ERRORS = "inbound_errors"
COUNT_KEYS = (*(kind.counted_as for kind in KINDS), CONFLICTS, INBOUND_CREATED, INBOUND_ERRORS)
LIST_KEYS = (*(kind.counted_as for kind in KINDS if kind.listed), CONFLICTS)
