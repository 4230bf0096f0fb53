"""The one place that writes tenants: one compare-and-set statement per write kind, over the staged
plan, inside the caller's single marketplace transaction (it commits nothing itself)."""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa

from reconcile.actions import CREATE, WRITES, Kind
from reconcile.pipeline.plan import Plan
from reconcile.pipeline.stage import Staged


@dataclass
class Outcome:
    """What the writes did not do: per write kind, the ids that lost the compare-and-set."""

    conflicts: dict[str, set[str]] = field(default_factory=lambda: {kind.name: set() for kind in WRITES})

    def lost(self, kind: Kind, tenant_id: str) -> bool:
        return tenant_id in self.conflicts[kind.name]

    @property
    def count(self) -> int:
        return sum(len(ids) for ids in self.conflicts.values())


def write(conn: sa.Connection, plan: Plan, staged: Staged) -> Outcome:
    """Apply the staged plan, kind by kind."""
    outcome = Outcome()
    for kind in WRITES:
        attempted = staged.creates(plan) if kind is CREATE else plan.count(kind)
        if attempted:
            outcome.conflicts[kind.name] = {row[0] for row in conn.exec_driver_sql(kind.write_sql)}
    return outcome
