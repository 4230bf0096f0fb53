"""The seam for extensions that run inside the run's transaction after the tenant writes (the
inbound addresses are one): a declared protocol, not attributes looked up at run time.

A hook gets the connection, the plan, the staged ids (through `StagedTables`, never the temp
tables by name) and the run's scope; it returns what it found (`HookResult`) instead of changing
the plan or the report. It runs in dry runs too, and must then write nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlalchemy as sa

from reconcile.db.cancel import Cancellation
from reconcile.db.urls import DatabaseUrl
from reconcile.pipeline.plan import Plan
from reconcile.pipeline.stage import StagedTables
from reconcile.scope import Scope


@dataclass(frozen=True)
class PrepareContext:
    """Before the snapshot: a hook may start reading on a connection of its own meanwhile."""

    engine: sa.Engine
    db: DatabaseUrl
    scope: Scope
    cancel: Cancellation


@dataclass(frozen=True)
class HookContext:
    conn: sa.Connection
    plan: Plan
    staged: StagedTables
    log: Any
    scope: Scope
    dry_run: bool
    network_timeout_s: float = 30.0


@dataclass(frozen=True)
class RowError:
    tenant_id: str
    error: str
    detail: str


@dataclass
class HookResult:
    """What a hook reports: row errors of its own step (listed with scope `name`, counted apart),
    counts to add to the report's, a summary for the report (under `name`), and work to do after
    the commit (events that describe committed rows)."""

    name: str
    row_errors: list[RowError] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    summary: dict[str, Any] | None = None
    after_commit: Callable[[], None] | None = None


class AfterWrite(Protocol):
    def prepare(self, ctx: PrepareContext) -> Callable[[], None]:
        """Called once before the snapshot; returns the cleanup to run when the run ends."""
        ...

    def __call__(self, ctx: HookContext) -> HookResult:
        """Called inside the marketplace transaction, after the writes (or where they would be)."""
        ...
