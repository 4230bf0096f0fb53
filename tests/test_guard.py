"""The safety guard on real plans: archive count and ratio (overridable by --force) and the empty
product snapshot (lifted only by --allow-empty-source)."""

from __future__ import annotations

import pytest

from reconcile.actions import ARCHIVE
from reconcile.pipeline import guard
from reconcile.pipeline.plan import Plan


def plan_of(*, total: int, target_total: int, archives: int) -> Plan:
    plan = Plan(total=total, target_total=target_total)
    for i in range(archives):
        plan.spool(ARCHIVE).add(f"t{i}\tT\tPRO\tACTIVE\tf\n".encode())
    return plan


def check(plan: Plan, **kwargs: object) -> guard.GuardVerdict | None:
    return guard.check(plan, **{"max_archive": 500, "max_archive_ratio": 0.10, **kwargs})  # type: ignore[arg-type]


def test_a_safe_plan_passes():
    assert check(plan_of(total=100, target_total=100, archives=5)) is None
    assert check(plan_of(total=0, target_total=0, archives=0)) is None  # both empty: nothing to guard


def test_too_many_archives_is_overridable_by_force():
    verdict = check(plan_of(total=3, target_total=3, archives=3), max_archive=2)
    assert verdict is not None and verdict.overridable_by_force is True
    assert verdict.reason == "would archive 3 tenants, more than max_archive=2"
    assert verdict.message == ("safety guard: would archive 3 tenants, more than max_archive=2; nothing written "
                               "(check the plan, then use --force or raise --max-archive / --max-archive-ratio)")
    assert verdict.figures["archives"] == 3 and verdict.figures["max_archive"] == 2


def test_the_ratio_rule_is_overridable_by_force():
    verdict = check(plan_of(total=60, target_total=60, archives=10))
    assert verdict is not None and verdict.overridable_by_force is True
    assert "max_archive_ratio=0.1" in verdict.reason and "--force" in verdict.message
    assert check(plan_of(total=12, target_total=12, archives=9)) is None  # fewer than ten: never the ratio


def test_an_empty_product_snapshot_is_not_overridable_by_force_and_says_to_check_the_product_url():
    verdict = check(plan_of(total=0, target_total=4, archives=0))
    assert verdict is not None and verdict.overridable_by_force is False
    assert verdict.reason == "the product snapshot is empty while the marketplace has 4 tenants"
    message = verdict.message
    assert message.startswith("safety guard: the product snapshot is empty while the marketplace has 4 tenants; "
                              "nothing written.")
    assert "PRODUCT_DATABASE_URL" in message and "--product-url" in message and "--allow-empty-source" in message
    assert "--force" not in message and "force" not in message.lower()
    assert "\n" not in message


@pytest.mark.parametrize("archives", [0, 4])
def test_allow_empty_source_lifts_only_the_empty_source_rule(archives):
    assert check(plan_of(total=0, target_total=4, archives=archives), allow_empty_source=True) is None
    # with every orphan archived, the archive limits still apply, and those are for --force
    verdict = check(plan_of(total=0, target_total=4, archives=4), allow_empty_source=True, max_archive=3)
    assert verdict is not None and verdict.overridable_by_force is True


def test_blocks_says_whether_force_lets_the_run_through():
    too_many = check(plan_of(total=3, target_total=3, archives=3), max_archive=2)
    empty = check(plan_of(total=0, target_total=1, archives=0))
    assert too_many is not None and empty is not None
    assert (too_many.blocks(force=False), too_many.blocks(force=True)) == (True, False)
    assert (empty.blocks(force=False), empty.blocks(force=True)) == (True, True)


def test_one_tenant_is_singular():
    verdict = check(plan_of(total=0, target_total=1, archives=0))
    assert verdict is not None and "marketplace has 1 tenant;" in verdict.message


# -- the empty-product message, as each command gives it ----------------------------------------------

def empty_product(dbs, tmp_path):
    """An empty product database beside a marketplace with tenants, its URL given in a config file."""
    from tests.pgtools import url_text

    dbs.add_market(("a", "A", "PRO", "ACTIVE"))
    config = tmp_path / "reconcile.toml"
    config.write_text(f'[database]\nproduct_url = "{url_text(dbs.product)}"\n')
    env = dbs.env()
    del env["PRODUCT_DATABASE_URL"]
    return config, env


def test_the_empty_product_message_names_where_the_product_url_came_from(dbs, tmp_path):
    from tests.pgtools import run_cli

    config, env = empty_product(dbs, tmp_path)
    result = run_cli("run", "--config", str(config), env=env)
    assert result.code == 5, result.stderr
    error = result.report["error"]
    assert f"config file {config}: database.product_url" in error, error
    assert "PRODUCT_DATABASE_URL" not in error and "--product-url" not in error, error
    assert "rerun with --allow-empty-source" in error, error  # run takes the flag
    assert result.stderr.splitlines() == [f"tenant-reconcile: {error}"]


def test_under_schedule_the_empty_product_message_advises_a_one_off_run_not_a_flag_schedule_lacks(dbs, tmp_path):
    import signal

    from tests.test_operations import Proc

    config, env = empty_product(dbs, tmp_path)
    proc = Proc(["schedule", "--config", str(config), "--cron", "0 2 * * 0", "--run-now"], env=env)
    try:
        report = proc.wait_for("reconcile.report")[0]
        proc.signal(signal.SIGTERM)
        assert proc.finish() == 0
    finally:
        if proc.proc.poll() is None:
            proc.proc.kill()
    error = report["error"]
    assert report["status"] == "aborted" and f"config file {config}: database.product_url" in error, error
    assert "rerun with" not in error and "tenant-reconcile run --allow-empty-source" in error, error
