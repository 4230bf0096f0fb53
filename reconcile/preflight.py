"""Checks made against the live marketplace before a run reads anything.

The mapping's targets must be labels of the marketplace's enums: `plan` would otherwise report a
plan that `run` cannot commit ("invalid input value for enum").
"""

from __future__ import annotations

import sqlalchemy as sa

from reconcile.errors import ConfigError
from reconcile.mapping import ARCHIVED, CLOSED, Mapping

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
