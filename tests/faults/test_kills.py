"""kill -9 of a run: its backend drops the run lock at once (an immediate rerun is not locked out),
and wherever the kill lands, the marketplace is exactly as before or exactly as after; the next run
converges."""

from __future__ import annotations

import threading
import time

from tests.faults.harness import (
    Proc,
    assert_success,
    backends_of,
    market_state,
    run,
    seed_bulk,
    set_delay,
    slow_writes,
    tenant_rows,
    wait_for_no_backends,
)
from tests.faults.proxy import wait_until


def sleeping_in_trigger(dbs) -> bool:
    rows = dbs.sql("marketplace", "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                  "AND application_name LIKE 'tenant-reconcile%' AND wait_event = 'PgSleep'")
    return bool(rows[0][0])


def test_a_killed_runs_lock_is_dropped_at_once_so_an_immediate_rerun_is_not_locked_out(faults):
    dbs = faults.dbs
    dbs.add_product(("a", "A", "pro", "active"), ("b", "B", "dev", "trial"), ("c", "C", "pro", "active"))
    slow_writes(dbs, 60)  # the first INSERT sleeps a minute in the trigger
    env = faults.direct_env(RECONCILE_NETWORK_TIMEOUT="30")
    first = Proc("run", env=env)
    try:
        first.wait_for("lock.acquired", timeout=30)
        wait_until(lambda: sleeping_in_trigger(dbs), 20, "the run's INSERT sleeping in the slow trigger")
        first.kill9()
    finally:
        first.kill_if_running()
    killed = time.monotonic()
    set_delay(dbs, 0)  # the rerun's own writes are fast (the dead backend is still asleep)
    gone: list[float | None] = []
    rerun = Proc("run", env=env)  # at once, and without --wait-lock
    watcher = threading.Thread(target=lambda: gone.append(_gone_after(dbs, killed)), daemon=True)
    watcher.start()
    try:
        out = rerun.finish(deadline=40)
    finally:
        rerun.kill_if_running()
    watcher.join(15)
    dead_backend = (f"; the killed run's session ended {gone[0]:.1f}s after the kill" if gone and gone[0] is not None
                    else "; the killed run's session was still open 10s after the kill")
    assert out.code != 6, f"the rerun found the lock still held by the dead run{dead_backend}{out.tail()}"
    report = assert_success(out, bound=30)
    assert sorted(report["created"]) == ["a", "b", "c"], report
    assert set(tenant_rows(dbs)) == {"a", "b", "c"}


def _gone_after(dbs, since: float) -> float | None:
    """Seconds from `since` until the killed run's session (asleep in the trigger) is gone; None
    when it is still there 10 s on."""
    deadline = since + 10
    while time.monotonic() < deadline:
        rows = dbs.sql("marketplace", "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                      "AND application_name LIKE 'tenant-reconcile%' AND wait_event = 'PgSleep' "
                                      "AND state = 'active'")
        if not rows[0][0]:
            return time.monotonic() - since
        time.sleep(0.05)
    return None


# Kills at these fractions of a complete run's time from lock.acquired to its exit: snapshot,
# late writes, around the commit, mid-write (the last one is left for the converging run).
KILL_AT = (0.0, 0.8, 0.97, 0.5)
DELAY_PER_ROW_S = 0.0005  # ~1 s of writes for 1900 rows: a wide window


def test_a_run_killed_at_any_point_of_a_large_apply_leaves_exactly_the_before_or_the_after_state(faults):
    dbs = faults.dbs
    seed_bulk(dbs, new=1000, drifted=600, same=400, archived=300)
    env = faults.direct_env(RECONCILE_MAX_ARCHIVE_RATIO="1", RECONCILE_NETWORK_TIMEOUT="30")
    dbs.sql("marketplace", 'CREATE TABLE rc_fault_before AS SELECT * FROM "Tenant"')
    before = market_state(dbs)

    def restore() -> None:
        set_delay(dbs, 0)
        dbs.sql("marketplace", 'DELETE FROM "Tenant"; INSERT INTO "Tenant" SELECT * FROM rc_fault_before')
        assert market_state(dbs) == before

    # The after state, and how long the apply takes, from one complete run.
    slow_writes(dbs, DELAY_PER_ROW_S, events="INSERT OR UPDATE")
    timed = Proc("run", env=env)
    try:
        timed.wait_for("lock.acquired", timeout=30)
        locked = time.monotonic()
        reference = timed.finish(deadline=60)
    finally:
        timed.kill_if_running()
    span = time.monotonic() - locked
    assert_success(reference)
    assert reference.report["counts"]["created"] == 1000 and reference.report["counts"]["archived"] == 300
    after = tenant_rows(dbs)
    restore()
    untouched = {row[0]: row for row in before['"Tenant"'] if after[row[0]] == tuple(row[1:5])}

    def classify() -> str:
        state = market_state(dbs)
        if state == before:
            return "before"
        rows = {row[0]: row for row in state['"Tenant"']}
        if {k: tuple(r[1:5]) for k, r in rows.items()} == after and all(rows[k] == r for k, r in untouched.items()):
            return "after"
        changed = sum(1 for k, r in rows.items() if tuple(r[1:5]) != after.get(k))
        return f"mixed ({len(rows)} rows, {changed} differ from the after state)"

    outcomes = []
    for fraction in KILL_AT:
        delay = round(fraction * span, 2)
        set_delay(dbs, DELAY_PER_ROW_S)
        proc = Proc("run", env=env)
        try:
            proc.wait_for("lock.acquired", timeout=30)
            time.sleep(delay)
            proc.kill9()
        finally:
            proc.kill_if_running()
        set_delay(dbs, 0)
        wait_for_no_backends(dbs, 20)
        outcome = classify()
        outcomes.append((delay, outcome))
        assert outcome in ("before", "after"), (f"killed {delay}s after lock.acquired (a whole run: {span:.1f}s): "
                                                f"{outcome}; so far {outcomes}")
        if len(outcomes) < len(KILL_AT):
            restore()
    assert any(o == "before" for _, o in outcomes), outcomes

    # After the last kill, a plain run converges to the after state.
    assert backends_of(dbs) == 0
    final = assert_success(run("run", env=env, deadline=60))
    assert tenant_rows(dbs) == after, "the run after the kills did not converge"
    assert final["status"] == "success"
    again = assert_success(run("plan", env=env, deadline=60))
    assert again["counts"]["created"] == again["counts"]["updated"] == again["counts"]["archived"] == 0, again
