"""The safety guard: refuse, before any write, a run that would archive too much (SPEC §3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reconcile.plan import Plan

# Never trip the ratio rule on a handful of archives in a small marketplace.
RATIO_MIN_ARCHIVES = 10


@dataclass(frozen=True)
class GuardVerdict:
    reason: str
    figures: dict[str, Any]


def check(plan: Plan, *, max_archive: int, max_archive_ratio: float, shards: int = 1) -> GuardVerdict | None:
    """None when the plan is safe to apply; otherwise why not, with the numbers that tripped it.

    A shard of N gets max_archive / N (rounded up), so N shards together archive about as much
    without --force as one whole run may."""
    archives = plan.archives.count
    limit = -(-max_archive // shards)
    figures = {"archives": archives, "max_archive": limit, "max_archive_ratio": max_archive_ratio,
               "source_tenants": plan.total, "target_tenants": plan.target_total}
    if shards > 1:
        figures["max_archive_all_shards"] = max_archive
    if plan.total == 0 and plan.target_total > 0:
        return GuardVerdict("the product snapshot is empty while the marketplace has "
                            f"{plan.target_total} tenants", figures)
    if archives > limit:
        per_shard = f" (max_archive={max_archive} over {shards} shards)" if shards > 1 else ""
        return GuardVerdict(f"would archive {archives} tenants, more than max_archive={limit}{per_shard}", figures)
    if archives >= RATIO_MIN_ARCHIVES and plan.target_total and archives > max_archive_ratio * plan.target_total:
        share = archives / plan.target_total
        return GuardVerdict(f"would archive {archives} of {plan.target_total} marketplace tenants "
                            f"({share:.1%}), more than max_archive_ratio={max_archive_ratio:g}", figures)
    return None
