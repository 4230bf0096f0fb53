"""A connection that dies (the proxy drops it, or resets it) is exit 7 with a report, never 1 and
never "internal error", in every phase of a run; a refused connection is exit 7 after the retry
budget. Nothing is written."""

from __future__ import annotations

import pytest

from tests.faults.harness import (
    BULK,
    COMMIT,
    INSERT,
    PHASES,
    assert_failed_run,
    assert_fired,
    assert_nothing_written,
    assert_success,
    market_state,
    run,
    seed_bulk,
    tenant_rows,
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


def test_a_commit_whose_answer_is_lost_is_confirmed_on_the_server_and_reported_as_applied(faults):
    """The COMMIT reached the server and committed; only its answer was lost (a reset on the way
    back). The run looks the transaction up and reports what really happened: success, exit 0."""
    seeded = seed_bulk(faults.dbs, new=40, same=10)
    rule = faults.market.add("reset", marker=(INSERT, COMMIT), direction="s2c", after=0)
    out = run("run", env=faults.env(), deadline=BOUND + 3)
    assert_fired(rule, "the answer to COMMIT")
    report = assert_success(out, bound=BOUND)
    assert report["status"] == "success" and report["counts"]["created"] == len(seeded.new), report["counts"]
    assert set(seeded.new) <= set(tenant_rows(faults.dbs))
    confirmed = [e for e in out.events if e.get("event") == "commit.confirmed"]
    assert len(confirmed) == 1, out.tail()


def test_a_commit_stalled_on_the_way_to_the_server_is_settled_as_rolled_back(faults):
    """The COMMIT never got through (a stalled path): the run's own session is still in its
    transaction on the server. It is ended, so the outcome is certain: nothing written, exit 7."""
    seed_bulk(faults.dbs, new=40, same=10)
    before = market_state(faults.dbs)
    rule = faults.market.add("stall", marker=(INSERT, COMMIT), direction="c2s", after=0, stall_new=False)
    out = run("run", env=faults.env(), deadline=BOUND + 3)
    assert_fired(rule, "the COMMIT")
    report = assert_failed_run(out, bound=BOUND, names=faults.names("marketplace"))
    assert "unknown" not in report["error"], report["error"]
    assert_nothing_written(faults.dbs, before)


def test_a_commit_whose_outcome_cannot_be_checked_says_it_is_unknown_never_nothing_written(faults):
    """The answer to COMMIT is lost and the server cannot be reached again: the run cannot know,
    and must not claim that nothing was written."""
    seed_bulk(faults.dbs, new=40, same=10)
    rule = faults.market.add("stall", marker=(INSERT, COMMIT), direction="s2c", after=0)
    out = run("run", env=faults.env(), deadline=BOUND + 3)
    assert_fired(rule, "the answer to COMMIT")
    report = assert_failed_run(out, bound=BOUND, names=faults.names("marketplace"))
    assert "unknown" in report["error"] and "nothing written" not in report["error"], report["error"]
    assert "rolled back" not in report["error"], report["error"]


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
