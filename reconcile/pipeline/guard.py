"""The safety guard: refuse, before any write, a run that would archive too much or that read an
empty product database."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reconcile.actions import ARCHIVE
from reconcile.pipeline.plan import Plan

# Never trip the ratio rule on a handful of archives in a small marketplace.
RATIO_MIN_ARCHIVES = 10


@dataclass(frozen=True)
class Advice:
    """What the empty-product message tells the operator, in the terms of the command that runs:
    where its product URL came from (`Settings.product_from`: a flag, a variable, the config file),
    and whether the command itself takes `--allow-empty-source` (`run` and `plan` do; `schedule` and
    `serve`, long-running, do not: the advice is then a one-off `run`)."""

    product_from: str | None = None
    takes_allow_empty_source: bool = False

    def check_url(self) -> str:
        if self.product_from:
            return f"Check the product database URL (it came from {self.product_from})"
        return "Check PRODUCT_DATABASE_URL (or --product-url, or database.product_url in the config file)"

    def lift(self) -> str:
        if self.takes_allow_empty_source:
            return "rerun with --allow-empty-source"
        return "apply once with `tenant-reconcile run --allow-empty-source`"


@dataclass(frozen=True)
class GuardVerdict:
    """Why a plan must not be applied. `overridable_by_force`: True for the archive limits (a big
    but intended archive is a judgement call, `--force` makes it), False for the empty product
    snapshot, which is almost always a wrong URL or a failed restore, so only the explicit
    `--allow-empty-source` lifts it."""

    reason: str
    figures: dict[str, Any]
    overridable_by_force: bool = True
    advice: Advice = field(default_factory=Advice)

    @property
    def message(self) -> str:
        """The one line the aborted run reports (its error and stderr)."""
        if self.overridable_by_force:
            return (f"safety guard: {self.reason}; nothing written "
                    "(check the plan, then use --force or raise --max-archive / --max-archive-ratio)")
        # Never suggests --force: forcing past an empty source would archive or orphan everything.
        return (f"safety guard: {self.reason}; nothing written. {self.advice.check_url()}: a wrong URL or a "
                "failed restore looks like this. If the product database really is empty, "
                f"{self.advice.lift()}.")

    def blocks(self, *, force: bool) -> bool:
        """Whether the run must stop here, given `--force`."""
        return not (force and self.overridable_by_force)


def _tenants(n: int) -> str:
    return f"{n} tenant" if n == 1 else f"{n} tenants"


def check(plan: Plan, *, max_archive: int, max_archive_ratio: float, allow_empty_source: bool = False,
          restricted: bool = False, advice: Advice = Advice()) -> GuardVerdict | None:
    """None when the plan is safe to apply; otherwise why not, with the numbers that tripped it.

    Per run: a shard run is guarded on its own plan and its own slice of the marketplace (the
    Indexed Job manifest sets a per-shard max_archive for that reason). `allow_empty_source` lifts
    the empty-snapshot rule only; the archive limits still apply to whatever that run would archive.
    A run `restricted` to some tenants skips the empty-snapshot rule: its product side is legitimately
    empty when every listed tenant was deleted (it is a rule about a wrong URL, seen on a whole table)."""
    archives = plan.count(ARCHIVE)
    figures = {"archives": archives, "max_archive": max_archive, "max_archive_ratio": max_archive_ratio,
               "source_tenants": plan.total, "target_tenants": plan.target_total}
    if plan.total == 0 and plan.target_total > 0 and not allow_empty_source and not restricted:
        return GuardVerdict("the product snapshot is empty while the marketplace has "
                            f"{_tenants(plan.target_total)}", figures, overridable_by_force=False,
                            advice=advice)
    if archives > max_archive:
        return GuardVerdict(f"would archive {_tenants(archives)}, more than max_archive={max_archive}", figures)
    if archives >= RATIO_MIN_ARCHIVES and plan.target_total and archives > max_archive_ratio * plan.target_total:
        share = archives / plan.target_total
        return GuardVerdict(f"would archive {archives} of {plan.target_total} marketplace tenants "
                            f"({share:.1%}), more than max_archive_ratio={max_archive_ratio:g}", figures)
    return None
