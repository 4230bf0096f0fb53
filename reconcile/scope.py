"""Which tenants one run covers: its shard and, for `sync`, the ids it is restricted to."""

from __future__ import annotations

from dataclasses import dataclass, field

from reconcile.db.sql import Query
from reconcile.shard import Shard


@dataclass(frozen=True)
class Scope:
    shard: Shard = field(default_factory=Shard)
    ids: tuple[str, ...] | None = None  # None: every tenant of the shard

    def where(self, column: str = "id") -> Query:
        """A predicate on `column` (a name from our code); the ids are bound parameters."""
        predicate = self.shard.sql_predicate(column)
        if self.ids is None:
            return Query(predicate, {})
        restrict = f"{column} = ANY(%(scope_ids)s)"
        sql = restrict if self.shard.whole else f"({predicate}) AND {restrict}"
        return Query(sql, {"scope_ids": list(self.ids)})
