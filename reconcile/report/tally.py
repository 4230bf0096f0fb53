"""How a run's results fold into its report: counts, capped lists and the per-tenant events, all
derived from the action kinds (reconcile.actions).

For each write kind a planned row is, in this order: rejected by staging (a row error), lost to a
concurrent writer (a conflict), or applied (counted, listed, announced when it was committed).
In a dry run nothing is announced, and the counts say what `run` would do; row errors are logged
either way: they are findings, not actions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reconcile.actions import (
    CONFLICTS,
    CREATE,
    ERROR,
    INBOUND_ERRORS,
    ORPHAN,
    SKIP,
    UNCHANGED,
    WRITES,
    Kind,
)
from reconcile.hooks import HookResult
from reconcile.pipeline.plan import Plan
from reconcile.pipeline.stage import STALE_PLAN, Staged
from reconcile.pipeline.write import Outcome
from reconcile.report.model import PARTIAL, Report

_CONFLICT_DETAIL = {CREATE.name: "a tenant with this id or slug appeared in the marketplace during the run"}
_CHANGED_MEANWHILE = "the marketplace row changed during the run"


@dataclass
class Results:
    """Everything a run found and did, for the tally."""

    plan: Plan
    staged: Staged = field(default_factory=Staged)
    outcome: Outcome | None = None  # None: nothing was written (a dry run, or an aborted one)
    hooks: list[HookResult] = field(default_factory=list)


def tally(report: Report, results: Results, log: Any) -> None:
    applied = results.outcome is not None
    for kind in WRITES:
        _tally_writes(report, kind, results, log, applied)
    _tally_errors(report, results, log)
    for kind in (ORPHAN, SKIP):
        for row in results.plan.spool(kind).rows():
            report.lists[kind.counted_as].add(kind.entry(row))
        report.counts[kind.counted_as] = results.plan.count(kind)
    report.counts[UNCHANGED.counted_as] = results.plan.unchanged
    report.counts[CONFLICTS] = (results.outcome.count if results.outcome else 0) + len(results.staged.stale)
    for hook in results.hooks:
        _tally_hook(report, hook, log)
    report.total = results.plan.reported_total
    if report.counts[ERROR.counted_as] or report.counts[CONFLICTS] or report.counts[INBOUND_ERRORS]:
        report.status = PARTIAL


def _tally_writes(report: Report, kind: Kind, results: Results, log: Any, applied: bool) -> None:
    done = 0
    for row in results.plan.spool(kind).rows():
        tenant_id = kind.tenant_id(row)
        if kind is CREATE and tenant_id in results.staged.rejected:
            continue  # a row error now, tallied with the others
        if tenant_id in results.staged.stale:
            report.lists[CONFLICTS].add(tenant_id)
            log.warning("tenant.conflict", tenant_id=tenant_id, action=kind.name, conflict=STALE_PLAN,
                        detail=results.staged.stale[tenant_id])
            continue
        if results.outcome is not None and results.outcome.lost(kind, tenant_id):
            report.lists[CONFLICTS].add(tenant_id)
            log.warning("tenant.conflict", tenant_id=tenant_id, action=kind.name,
                        detail=_CONFLICT_DETAIL.get(kind.name, _CHANGED_MEANWHILE))
            continue
        done += 1
        report.lists[kind.counted_as].add(kind.entry(row))
        if applied and kind.event:
            log.info(kind.event, tenant_id=tenant_id, **kind.event_fields(row))
        elif kind is CREATE and len(report.create_fields) < report.id_limit:
            report.create_fields[tenant_id] = kind.event_fields(row)  # what `plan` shows beside the id
    report.counts[kind.counted_as] = done


def _tally_errors(report: Report, results: Results, log: Any) -> None:
    rows = [ERROR.entry(row) for row in results.plan.spool(ERROR).rows()]
    rows += [{"id": tenant_id, "error": error, "detail": detail}
             for tenant_id, (error, detail) in results.staged.rejected.items()]
    for entry in rows:
        report.lists[ERROR.counted_as].add(entry)
        log.warning(ERROR.event, tenant_id=entry["id"], error=entry["error"], detail=entry["detail"])
    report.counts[ERROR.counted_as] = len(rows)


def _tally_hook(report: Report, hook: HookResult, log: Any) -> None:
    """A hook's row errors are listed with the others (its scope named), counted apart: the tenant
    row itself was applied, and counted as such."""
    for row_error in hook.row_errors:
        report.counts[INBOUND_ERRORS] += 1
        report.lists[ERROR.counted_as].add({"id": row_error.tenant_id, "error": row_error.error,
                                            "detail": row_error.detail, "scope": hook.name})
        log.warning(ERROR.event, tenant_id=row_error.tenant_id, error=row_error.error, detail=row_error.detail,
                    scope=hook.name)
    for key, value in hook.counts.items():
        report.counts[key] = report.counts.get(key, 0) + value
    if hook.summary is not None:
        report.hook_summaries[hook.name] = hook.summary


def planned_counts(results: Results) -> dict[str, int]:
    """What an aborted run would have done (nothing was written): write kinds by their verb, the
    findings by their report key."""
    plan, staged = results.plan, results.staged
    planned = {kind.name: plan.count(kind) for kind in WRITES}
    planned[CREATE.name] = staged.creates(plan)
    planned.update({kind.counted_as: plan.count(kind) for kind in (ORPHAN, SKIP)})
    planned[ERROR.counted_as] = plan.count(ERROR) + len(staged.rejected)
    return planned
