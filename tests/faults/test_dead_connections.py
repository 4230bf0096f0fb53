"""A connection that dies (the proxy drops it, or resets it) is exit 7 with a report, never 1 and
never "internal error", in every phase of a run; a refused connection is exit 7 after the retry
budget. Nothing is written."""

from __future__ import annotations

import pytest

from tests.faults.harness import (
    BULK,
    PHASES,
    assert_failed_run,
    assert_fired,
    assert_nothing_written,
    market_state,
    run,
    seed_bulk,
)

BOUND = 3 + 10  # RECONCILE_NETWORK_TIMEOUT (3 in these tests' environment) + 10 s


# Every phase with a drop; a reset (RST instead of FIN) where the client is reading or writing.
CASES = [(phase, "drop") for phase in PHASES] + [
    (phase, "reset") for phase in ("connect", "lock", "product snapshot", "marketplace snapshot", "staging", "commit")]


@pytest.mark.parametrize(("phase", "action"), CASES, ids=[f"{p}-{a}" for p, a in CASES])
def test_a_dead_connection_is_exit_7_with_a_report_in_every_phase(faults, phase, action):
    spec = PHASES[phase]
    seed_bulk(faults.dbs, **BULK)
    before = market_state(faults.dbs)
    rule = faults.proxy(spec.proxy).add(action, marker=spec.markers, direction=spec.direction, after=spec.after)
    out = run("run", env=faults.env(), deadline=BOUND + 3)
    assert_fired(rule, phase)
    assert_failed_run(out, bound=BOUND, names=faults.names(spec.proxy))
    assert_nothing_written(faults.dbs, before)


@pytest.mark.parametrize("which", ["product", "marketplace"])
def test_a_refused_connection_is_exit_7_after_the_retry_budget(faults, which):
    seed_bulk(faults.dbs, new=20, same=20)
    before = market_state(faults.dbs)
    faults.proxy(which).refuse()
    out = run("run", env=faults.env(RECONCILE_CONNECT_RETRY="1"), deadline=20)
    assert_failed_run(out, bound=1 + 10, names=faults.names(which))
    assert out.elapsed >= 1.0, f"the retry budget of 1 s was not used: {out.elapsed:.2f}s"
    assert_nothing_written(faults.dbs, before)


@pytest.mark.parametrize("phase", ["insert", "commit"])
def test_a_dead_connection_during_a_sync_is_exit_7_with_a_report(faults, phase):
    faults.dbs.add_product(("solo", "Solo", "pro", "active"), ("other", "Other", "pro", "active"))
    before = market_state(faults.dbs)
    spec = PHASES[phase]
    rule = faults.market.add("drop", marker=spec.markers, direction=spec.direction, after=spec.after)
    out = run("sync", "solo", env=faults.env(), deadline=BOUND + 3)
    assert_fired(rule, phase)
    assert_failed_run(out, bound=BOUND, names=faults.names("marketplace"))
    assert out.last_json["success"] is False
    assert_nothing_written(faults.dbs, before)


# What a sync reads for its answer (the tenant row, then its inbound address).
SYNC_ANSWER_READS = [b'SELECT id, name, plan::text AS plan, status::text AS status FROM "Tenant"',
                     b'SELECT "emailAddress" FROM inbound_addresses']


@pytest.mark.parametrize("marker", SYNC_ANSWER_READS, ids=["tenant row", "inbound address"])
def test_a_sync_never_reports_a_failure_for_what_it_committed(faults, marker):
    """A connection reset while the sync reads what its answer shows: either the sync failed and
    nothing is written, or it committed and says so (exit 0, success) - never exit 7 with the
    tenant written."""
    faults.dbs.add_product(("solo", "Solo", "pro", "active"))
    before = market_state(faults.dbs)
    rule = faults.market.add("reset", marker=marker)
    out = run("sync", "solo", env=faults.env(), deadline=BOUND + 3)
    assert_fired(rule, "the sync's read of its answer")
    if out.code == 0:
        assert out.report["status"] == "success" and out.last_json["success"] is True, out.tail()
        assert market_state(faults.dbs)['"Tenant"'], "exit 0 but nothing was written"
    else:
        assert_failed_run(out, bound=BOUND, names=faults.names("marketplace"))
        assert out.last_json["success"] is False
        assert_nothing_written(faults.dbs, before)
