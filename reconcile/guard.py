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


def _tenants(n: int) -> str:
    return f"{n} tenant" if n == 1 else f"{n} tenants"


def check(plan: Plan, *, max_archive: int, max_archive_ratio: float) -> GuardVerdict | None:
    """None when the plan is safe to apply; otherwise why not, with the numbers that tripped it.

    Per run, as SPEC §3 says: a shard run is guarded on its own plan and its own slice of the
    marketplace (the Indexed Job manifest sets a per-shard max_archive for that reason)."""
    archives = plan.archives.count
    figures = {"archives": archives, "max_archive": max_archive, "max_archive_ratio": max_archive_ratio,
               "source_tenants": plan.total, "target_tenants": plan.target_total}
    if plan.total == 0 and plan.target_total > 0:
        return GuardVerdict("the product snapshot is empty while the marketplace has "
                            f"{_tenants(plan.target_total)}", figures)
    if archives > max_archive:
        return GuardVerdict(f"would archive {_tenants(archives)}, more than max_archive={max_archive}", figures)
    if archives >= RATIO_MIN_ARCHIVES and plan.target_total and archives > max_archive_ratio * plan.target_total:
        share = archives / plan.target_total
        return GuardVerdict(f"would archive {archives} of {plan.target_total} marketplace tenants "
                            f"({share:.1%}), more than max_archive_ratio={max_archive_ratio:g}", figures)
    return None
