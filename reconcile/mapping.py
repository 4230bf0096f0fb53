"""How a product tenant row maps to marketplace terms, and which rows are errors.

One set of rules with two evaluators: `Mapping.normalize` (Python, used by `sync`/`status` and the
tests) and `Mapping.product_select_sql` (the same rules compiled into the snapshot query, so the
bulk path never maps a row in Python). `tests/test_mapping_sql.py` checks the two agree.
"""

from __future__ import annotations

from collections.abc import Mapping as MappingABC
from dataclasses import dataclass, field
from typing import Any

from reconcile.db.sql import Query
from reconcile.errors import ConfigError

# Mapping target meaning "archive": the marketplace enum has no ARCHIVED, the tenant becomes CLOSED.
ARCHIVED = "ARCHIVED"
# Status value of a normalized product row that is archived; cannot collide with an enum label.
ARCHIVED_MARK = "@archived"
CLOSED = "CLOSED"

# Characters trimmed from values and names, identical in Python (str.strip) and SQL (btrim).
TRIM_CHARS = " \t\n\r\x0b\x0c"
# What SQL ascii() gives for a name that is empty (0) or starts with a trimmed character: the blank
# check trims only those names. ascii() makes no copy of the name, unlike left(name, 1).
_TRIM_CODES = ", ".join(str(code) for code in sorted({0, *map(ord, TRIM_CHARS)}))
assert all(ord(char) < 128 for char in TRIM_CHARS), "ascii() is the code point: the trimmed characters must be ASCII"
MAX_ID_LENGTH = 128
MAX_NAME_LENGTH = 255

INVALID_ID = "invalid_id"
INVALID_NAME = "invalid_name"
INVALID_PLAN = "invalid_plan"
INVALID_STATUS = "invalid_status"
SLUG_CONFLICT = "slug_conflict"
INVALID_ID_FOR_EMAIL = "invalid_id_for_email"
# Verdict of a tenant on the skip list: left untouched, counted apart (not an error).
SKIPPED = "skipped"

DEFAULT_PLAN_MAP = {"dev": "DEV", "starter": "STARTER", "pro": "PRO", "enterprise": "ENTERPRISE"}
DEFAULT_STATUS_MAP = {"trial": "TRIAL", "active": "ACTIVE", "suspended": "SUSPENDED", "closed": "CLOSED",
                      "archived": ARCHIVED}


def slug_for(tenant_id: str) -> str:
    """Slug of a created marketplace tenant: `_` becomes `-`, lowercased."""
    return tenant_id.replace("_", "-").lower()


def _normkey(value: str | None) -> str:
    """Trim, then fold ASCII letters only: exactly what SQL lower(x COLLATE "C") does."""
    return (value or "").strip(TRIM_CHARS).translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True)
class NormalizedRow:
    """A product row in marketplace terms. `error` is '' for a valid row; then plan and status are
    marketplace enum labels (status may be ARCHIVED_MARK). For an error row they keep the raw text."""

    id: str
    name: str | None
    plan: str
    status: str
    error: str

    @property
    def archived(self) -> bool:
        return self.status == ARCHIVED_MARK


@dataclass(frozen=True)
class Mapping:
    plan: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PLAN_MAP))
    status: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_STATUS_MAP))
    plan_when_empty: str = "DEV"
    status_when_empty: str = "ACTIVE"

    @classmethod
    def from_config(cls, raw: MappingABC[str, Any], where: str = "mapping") -> Mapping:
        """Build from the `[mapping]` table of the config file.

        `[mapping.plan]` / `[mapping.status]` override or add entries of the default tables;
        `replace_defaults = true` makes them replace the defaults whole. Targets are checked for
        shape only: which labels exist is the live database's business, checked by the run."""
        known = {"plan", "status", "plan_when_empty", "status_when_empty", "replace_defaults"}
        for key in raw:
            if key not in known:
                raise ConfigError(f"{where}.{key} is not a known setting (expected one of {sorted(known)})")
        replace_defaults = raw.get("replace_defaults", False)
        if not isinstance(replace_defaults, bool):
            raise ConfigError(f"{where}.replace_defaults must be true or false")
        base = cls()
        plan = _table(raw.get("plan", {}), f"{where}.plan")
        status = _table(raw.get("status", {}), f"{where}.status")
        if not replace_defaults:
            plan = {**base.plan, **plan}
            status = {**base.status, **status}
        plan_empty = _target(raw.get("plan_when_empty", base.plan_when_empty), f"{where}.plan_when_empty")
        status_empty = _target(raw.get("status_when_empty", base.status_when_empty), f"{where}.status_when_empty")
        return cls(plan=plan, status=status, plan_when_empty=plan_empty, status_when_empty=status_empty)

    # -- Python evaluator -------------------------------------------------------------------------
    def map_plan(self, raw: str | None) -> str | None:
        key = _normkey(raw)
        return self.plan_when_empty if key == "" else self.plan.get(key)

    def map_status(self, raw: str | None) -> str | None:
        """Marketplace status, ARCHIVED_MARK for an archived tenant, None when invalid."""
        key = _normkey(raw)
        target = self.status_when_empty if key == "" else self.status.get(key)
        return ARCHIVED_MARK if target == ARCHIVED else target

    def normalize(self, tenant_id: str, name: str | None, plan: str | None, status: str | None) -> NormalizedRow:
        mapped_plan = self.map_plan(plan)
        mapped_status = self.map_status(status)
        if tenant_id == "" or len(tenant_id) > MAX_ID_LENGTH:
            error = INVALID_ID
        elif name is None or name.strip(TRIM_CHARS) == "" or len(name) > MAX_NAME_LENGTH:
            error = INVALID_NAME
        elif mapped_plan is None:
            error = INVALID_PLAN
        elif mapped_status is None:
            error = INVALID_STATUS
        else:
            error = ""
        return NormalizedRow(
            tenant_id, name,
            mapped_plan if mapped_plan is not None else (plan or ""),
            mapped_status if mapped_status is not None else (status or ""),
            error,
        )

    # -- SQL evaluator ----------------------------------------------------------------------------
    def _case_sql(self, column: str, table: dict[str, str], when_empty: str, params: dict[str, Any]) -> str:
        """Raw value -> marketplace value, NULL when unmapped. Exact keys are tried first: clean
        data (the common case) then skips btrim/lower, which dominate the snapshot's server time.
        Every configured value is a bound parameter, named into `params`."""
        def bind(value: str) -> str:
            name = f"map_{len(params)}"
            params[name] = value
            return f"%({name})s"

        arms = " ".join(f"WHEN {bind(k)} THEN {bind(_mark(v))}" for k, v in sorted(table.items()))
        normalized = f'lower(btrim(coalesce({column}, \'\'), %(map_trim)s) COLLATE "C")'
        slow = f"CASE {normalized} WHEN '' THEN {bind(_mark(when_empty))} {arms} END"
        return f"CASE {column} {arms} ELSE {slow} END"

    def product_select_sql(self, where: Query | None = None, skip_ids: tuple[str, ...] = (),
                           order_by: str = 'id COLLATE "C"') -> Query:
        """The product snapshot query: rows already in marketplace terms, sorted by id bytewise
        (`order_by`: reconcile.db.sql.utf8_order for the server's encoding).

        Its output line equals the marketplace query's line exactly when the tenant is valid and
        in sync, which is what lets the diff skip unchanged rows with one bytes comparison.
        Length checks look at octet_length first (O(1)); the blank-name check trims only names
        that start with a trimmed character. A tenant of `skip_ids` carries SKIPPED in the
        verdict column, so the diff sees it even when it is in sync. `OFFSET 0` keeps the inner
        query from being flattened into the outer one, which would evaluate each mapping CASE
        twice per row (once for the value, once for the verdict)."""
        where = where or Query("TRUE", {})
        params: dict[str, Any] = {"map_trim": TRIM_CHARS, **where.params}
        plan_case = self._case_sql("plan", self.plan, self.plan_when_empty, params)
        status_case = self._case_sql("status", self.status, self.status_when_empty, params)
        skipped = ""
        if skip_ids:
            params["skip_ids"] = list(skip_ids)
            skipped = f" WHEN id = ANY(%(skip_ids)s) THEN '{SKIPPED}'"
        sql = (
            "SELECT id, name, coalesce(mp, coalesce(plan, '')), coalesce(ms, coalesce(status, '')),"
            f" CASE{skipped} WHEN id = '' OR (octet_length(id) > {MAX_ID_LENGTH} AND length(id) > {MAX_ID_LENGTH})"
            f" THEN '{INVALID_ID}'"
            f" WHEN name IS NULL OR (ascii(name) IN ({_TRIM_CODES}) AND btrim(name, %(map_trim)s) = '')"
            f" OR (octet_length(name) > {MAX_NAME_LENGTH} AND length(name) > {MAX_NAME_LENGTH})"
            f" THEN '{INVALID_NAME}'"
            f" WHEN mp IS NULL THEN '{INVALID_PLAN}' WHEN ms IS NULL THEN '{INVALID_STATUS}' ELSE '' END"
            " FROM (SELECT id, name, plan, status,"
            f" {plan_case} AS mp, {status_case} AS ms"
            f" FROM tenants WHERE {where.sql} OFFSET 0) AS t"
            f" ORDER BY {order_by}"
        )
        return Query(sql, params)


def _mark(target: str) -> str:
    return ARCHIVED_MARK if target == ARCHIVED else target


def _target(value: Any, where: str) -> str:
    """A marketplace enum label as written in the config: any non-empty text without surrounding
    whitespace (production enums may carry labels beyond the built-in ones). For status,
    ARCHIVED means: archive the tenant."""
    if not isinstance(value, str) or not value or value != value.strip(TRIM_CHARS):
        raise ConfigError(f"{where} must be a marketplace label: a non-empty string without surrounding "
                          f"whitespace, got {value!r}")
    return value


def _table(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, MappingABC):
        raise ConfigError(f"{where} must be a table of product value = marketplace value")
    out: dict[str, str] = {}
    written: dict[str, str] = {}
    for key, target in value.items():
        norm = _normkey(str(key))
        if not norm:
            raise ConfigError(f"{where} has an empty key; empty values use {where}_when_empty")
        if norm in written:  # product values are compared trimmed and case-insensitively
            raise ConfigError(f"{where} has both {written[norm]!r} and {key!r}, the same product value")
        written[norm] = str(key)
        out[norm] = _target(target, f"{where}.{key}")
    return out
