"""A peer that stalls (stops forwarding, keeps the TCP connection open) must not hang a run: it ends
by itself with exit 7 within RECONCILE_NETWORK_TIMEOUT + 10 s, and SIGTERM/SIGINT end it within
10 s even when a cancel request cannot get through."""

from __future__ import annotations

import signal
import time

import pytest

from tests.faults.harness import (
    BULK,
    PHASES,
    Proc,
    assert_failed_run,
    assert_fired,
    assert_nothing_written,
    market_state,
    run,
    seed_bulk,
)

NETWORK_TIMEOUT = 2
BOUND = NETWORK_TIMEOUT + 10  # the promise: the timeout plus 10 s


@pytest.mark.parametrize("phase", list(PHASES))
def test_a_stalled_peer_ends_the_run_with_exit_7_within_the_network_timeout(faults, phase):
    spec = PHASES[phase]
    seed_bulk(faults.dbs, **BULK)
    before = market_state(faults.dbs)
    rule = faults.proxy(spec.proxy).add("stall", marker=spec.markers, direction=spec.direction, after=spec.after)
    out = run("run", env=faults.env(RECONCILE_NETWORK_TIMEOUT=str(NETWORK_TIMEOUT)), deadline=BOUND + 3)
    assert_fired(rule, phase)
    assert_failed_run(out, bound=BOUND, names=faults.names(spec.proxy))
    assert_nothing_written(faults.dbs, before)


def test_a_stalled_peer_ends_a_sync_too(faults):
    faults.dbs.add_product(("solo", "Solo", "pro", "active"))
    before = market_state(faults.dbs)
    rule = faults.market.add("stall", marker=PHASES["insert"].markers, direction="s2c")
    out = run("sync", "solo", env=faults.env(RECONCILE_NETWORK_TIMEOUT=str(NETWORK_TIMEOUT)), deadline=BOUND + 3)
    assert_fired(rule, "the sync's INSERT")
    assert_failed_run(out, bound=BOUND, names=faults.names("marketplace"))
    assert out.last_json["success"] is False
    assert_nothing_written(faults.dbs, before)


SIGNAL_CASES = [
    (signal.SIGTERM, "product snapshot"),
    (signal.SIGINT, "marketplace snapshot"),
    (signal.SIGTERM, "lock"),
    (signal.SIGINT, "staging"),
    (signal.SIGTERM, "insert"),
    (signal.SIGTERM, "commit"),
]


@pytest.mark.parametrize(("sig", "phase"), SIGNAL_CASES, ids=[f"{s.name}-{p}" for s, p in SIGNAL_CASES])
def test_a_signal_ends_a_run_stalled_in_any_phase_within_10s(faults, sig, phase):
    spec = PHASES[phase]
    seed_bulk(faults.dbs, **BULK)
    before = market_state(faults.dbs)
    rule = faults.proxy(spec.proxy).add("stall", marker=spec.markers, direction=spec.direction, after=spec.after)
    # A long network timeout: only the signal may end this run in time.
    proc = Proc("run", env=faults.env(RECONCILE_NETWORK_TIMEOUT="120"))
    try:
        assert rule.wait(30), f"the run never reached {phase}"
        time.sleep(0.3)  # well inside the stalled read or write
        proc.signal(sig)
        out = proc.finish(deadline=13)
    finally:
        proc.kill_if_running()
    report = assert_failed_run(out, bound=10, names=(sig.name,))
    if phase == "commit":
        # The COMMIT was sent and the path to the server is stalled: the run cannot know whether the
        # server got it, so it must say the outcome is unknown, never claim that nothing was written.
        assert "unknown" in report["error"] and "nothing written" not in report["error"], report["error"]
    else:
        assert "nothing written" in report["error"] or "rolled back" in report["error"], report["error"]
    assert_nothing_written(faults.dbs, before)


# The product lookup a sync makes before its run (`SELECT ... FROM tenants WHERE id = ...`).
PRODUCT_LOOKUP = b"FROM tenants WHERE id"


def test_a_signal_ends_a_sync_stalled_in_its_product_lookup_with_its_report_and_answer_within_10s(faults):
    faults.dbs.add_product(("solo", "Solo", "pro", "active"))
    before = market_state(faults.dbs)
    rule = faults.product.add("stall", marker=PRODUCT_LOOKUP, direction="s2c")
    proc = Proc("sync", "solo", env=faults.env(RECONCILE_NETWORK_TIMEOUT="120"))
    try:
        assert rule.wait(30), "the sync never sent its product lookup"
        time.sleep(0.3)
        proc.signal(signal.SIGTERM)
        out = proc.finish(deadline=13)
    finally:
        proc.kill_if_running()
    report = assert_failed_run(out, bound=10, names=("SIGTERM",))
    assert "nothing written" in report["error"], report["error"]
    answer = out.last_json
    assert answer["success"] is False and "SIGTERM" in answer["error"], answer
    assert_nothing_written(faults.dbs, before)


def test_a_sync_that_does_not_stop_in_time_is_still_reported_and_answered_and_exits_7_within_10s(faults):
    """Stalled while connecting (nothing to cancel yet, and a long connect timeout): the process
    reports for the sync, answers, and exits 7 on its own."""
    faults.dbs.add_product(("solo", "Solo", "pro", "active"))
    before = market_state(faults.dbs)
    spec = PHASES["connect"]
    rule = faults.product.add("stall", direction=spec.direction, after=spec.after)
    proc = Proc("sync", "solo", env=faults.env(RECONCILE_NETWORK_TIMEOUT="120", RECONCILE_CONNECT_TIMEOUT="60"))
    try:
        assert rule.wait(30), "the sync never connected to the product database"
        time.sleep(0.3)
        proc.signal(signal.SIGTERM)
        out = proc.finish(deadline=13)
    finally:
        proc.kill_if_running()
    assert_failed_run(out, bound=10, names=("SIGTERM",))
    answer = out.last_json
    assert answer["success"] is False and "SIGTERM" in answer["error"], answer
    assert_nothing_written(faults.dbs, before)


@pytest.mark.parametrize(("command", "marker"), [
    (("status", "solo"), PRODUCT_LOOKUP),
    (("check",), b"current_setting('server_version')"),
], ids=["status", "check"])
def test_a_signal_ends_a_stalled_status_or_check_with_one_line_and_exit_7_within_10s(faults, command, marker):
    faults.dbs.add_product(("solo", "Solo", "pro", "active"))
    rule = faults.product.add("stall", marker=marker, direction="s2c")
    proc = Proc(*command, env=faults.env(RECONCILE_NETWORK_TIMEOUT="120"))
    try:
        assert rule.wait(30), f"{command[0]} never sent its first query"
        time.sleep(0.3)
        proc.signal(signal.SIGTERM)
        out = proc.finish(deadline=13)
    finally:
        proc.kill_if_running()
    assert out.code == 7 and out.elapsed < 10, out.tail()
    assert out.stderr.splitlines() == [f"tenant-reconcile: {command[0]} stopped (SIGTERM); it only reads, "
                                       "nothing was changed"], out.tail()


@pytest.mark.parametrize(("stall", "env", "bound"), [
    # the timeout + 10 s, as for a run (the defaults would take 30 s + a probe)
    ({"marker": b"CREATE OR REPLACE FUNCTION", "direction": "s2c"}, {"RECONCILE_NETWORK_TIMEOUT": "2"}, 2 + 10),
    # the connect timeout + the process's start (the default would take 10 s)
    ({"direction": "c2s", "after": 8}, {"RECONCILE_CONNECT_TIMEOUT": "2"}, 2 + 5),
], ids=["network timeout", "connect timeout"])
def test_install_trigger_is_bounded_by_the_same_timeouts_as_a_run(faults, stall, env, bound):
    rule = faults.product.add("stall", **stall)
    out = run("install-trigger", env=faults.env(**env), deadline=40)
    assert_fired(rule, "the install-trigger statement")
    assert out.code == 7 and out.elapsed < bound, out.tail()
    assert "cannot install the trigger" in out.stderr or "cannot connect" in out.stderr, out.tail()


@pytest.mark.parametrize(("whole_path", "says"), [
    (True, "the server could not be reached to check on it"),
    (False, "the server is waiting for us, so data was lost on the way"),
], ids=["whole path stalls", "one connection stalls"])
def test_a_stalled_peer_is_named_as_the_readme_says(faults, whole_path, says):
    """What the failure table of the README quotes, for either kind of stall."""
    seed_bulk(faults.dbs, **BULK)
    spec = PHASES["marketplace snapshot"]
    rule = faults.market.add("stall", marker=spec.markers, direction=spec.direction, after=spec.after,
                             stall_new=whole_path)
    out = run("run", env=faults.env(RECONCILE_NETWORK_TIMEOUT=str(NETWORK_TIMEOUT)), deadline=BOUND + 3)
    assert_fired(rule, "marketplace snapshot")
    report = assert_failed_run(out, bound=BOUND, names=faults.names("marketplace"))
    assert says in report["error"] and "connection cut (RECONCILE_NETWORK_TIMEOUT)" in report["error"], report["error"]
