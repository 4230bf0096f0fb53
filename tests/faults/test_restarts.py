"""A server restarted under a run (a Patroni failover, a crash): exit 7 with a report and nothing
written, whether it dies mid-snapshot or mid-apply, by `-m immediate` or `-m fast`; a rerun once
the server is back succeeds. Only the module's own embedded server is ever restarted."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.faults.harness import (
    BULK,
    INSERT,
    SNAPSHOT,
    Faults,
    OwnServer,
    Proc,
    assert_failed_run,
    assert_nothing_written,
    assert_success,
    faults_for,
    market_state,
    run,
    seed_bulk,
    set_delay,
    slow_writes,
    tenant_rows,
)

AFTER_RESTART_S = 10  # the run must have ended this long after the server went down


@pytest.fixture()
def own(own_server: OwnServer) -> Iterator[tuple[OwnServer, Faults]]:
    dbs = own_server.pair()
    try:
        with faults_for(dbs) as faults:
            yield own_server, faults
    finally:
        own_server.drop(dbs)


@pytest.mark.parametrize(("mode", "which"), [("immediate", "product"), ("fast", "marketplace")])
def test_a_server_restart_mid_snapshot_is_exit_7_with_a_report_and_a_rerun_succeeds(own, mode, which):
    server, faults = own
    seeded = seed_bulk(faults.dbs, **BULK)
    before = market_state(faults.dbs)
    # The snapshot query waits in the proxy while the server restarts, then goes to a dead session.
    rule = faults.proxy(which).add("hold", marker=SNAPSHOT)
    proc = Proc("run", env=faults.env(RECONCILE_NETWORK_TIMEOUT="30"))
    try:
        assert rule.wait(30), f"the run never reached the {which} snapshot"
        server.restart(mode)
        rule.release()
        out = proc.finish(deadline=AFTER_RESTART_S + 5)
    finally:
        rule.release()
        proc.kill_if_running()
    assert_failed_run(out, bound=AFTER_RESTART_S, names=faults.names("either"))
    assert_nothing_written(faults.dbs, before)
    faults.product.clear()
    faults.market.clear()
    rerun = assert_success(run("run", env=faults.env(), deadline=60))
    assert rerun["counts"]["created"] == BULK["new"] and rerun["counts"]["updated"] == BULK["drifted"]
    assert len(tenant_rows(faults.dbs)) == len(seeded.product_ids)


@pytest.mark.parametrize("mode", ["immediate", "fast"])
def test_a_server_restart_mid_apply_is_exit_7_with_a_report_and_a_rerun_succeeds(own, mode):
    server, faults = own
    dbs = faults.dbs
    dbs.add_product(*[(f"n{i:02d}", f"New {i}", "pro", "active") for i in range(20)])
    slow_writes(dbs, 0.25)  # the INSERT of 20 tenants takes 5 s: the restart lands inside it
    before = market_state(dbs)
    rule = faults.market.add("notify", marker=INSERT)
    proc = Proc("run", env=faults.env(RECONCILE_NETWORK_TIMEOUT="30"))
    try:
        assert rule.wait(30), "the run never reached its INSERT"
        time.sleep(0.5)
        server.restart(mode)
        out = proc.finish(deadline=AFTER_RESTART_S + 5)
    finally:
        proc.kill_if_running()
    assert_failed_run(out, bound=AFTER_RESTART_S, names=faults.names("either"))
    assert_nothing_written(dbs, before)
    set_delay(dbs, 0)
    rerun = assert_success(run("run", env=faults.env(), deadline=60))
    assert len(rerun["created"]) == 20 and len(tenant_rows(dbs)) == 20
