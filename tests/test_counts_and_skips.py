"""The skip list, the counts invariant, inbound row errors counted apart, the lock holder named on
exit 6, and `status` agreeing with `run` for an archived tenant absent from the marketplace."""

from __future__ import annotations

import json

from reconcile.db.lock import lock_key
from reconcile.inbound import inbound_hook
from reconcile.shard import Shard
from tests.pgtools import reconcile, run_cli

INVARIANT = ("created", "updated", "unchanged", "errors", "conflicts", "skipped")


def product_side_sum(report) -> int:
    """created + updated + archived (not orphans) + unchanged + errors + conflicts + skipped. No test
    here archives orphans."""
    return sum(report.counts[k] for k in INVARIANT) + report.counts["archived"]


def test_skipped_tenants_are_left_untouched_counted_and_listed_not_errors(dbs):
    dbs.add_product(("drifted", "New name", "pro", "active"), ("insync", "Same", "dev", "active"),
                    ("missing", "M", "dev", "active"), ("bad", "B", "gold", "active"), ("ok", "OK", "pro", "active"))
    dbs.add_market(("drifted", "Old name", "PRO", "ACTIVE"), ("insync", "Same", "DEV", "ACTIVE"),
                   ("orphan", "O", "DEV", "ACTIVE"))
    before = dbs.market()
    report, events = reconcile(dbs, skip_ids=("drifted", "insync", "missing", "bad", "orphan"), orphans="archive")
    assert report.status == "success"  # the known-bad row is skipped, so the night is green
    assert report.counts["skipped"] == 5 and report.counts["errors"] == 0 and report.counts["orphans"] == 0
    assert sorted(report.lists["skipped"]) == ["bad", "drifted", "insync", "missing", "orphan"]
    assert report.counts["created"] == 1 and list(report.lists["created"]) == ["ok"]
    market = dbs.market()
    for tenant in ("drifted", "insync", "orphan"):
        assert market[tenant] == before[tenant]
    assert "missing" not in market and "bad" not in market
    assert not events.of("tenant.error")
    # total: the 5 product tenants and the skipped orphan, each counted once
    assert product_side_sum(report) == report.total == 6
    assert report.source["tenants"] == 5


def test_skip_list_from_the_environment_and_the_flag(dbs):
    dbs.add_product(("a", "A", "pro", "active"), ("b", "B", "pro", "active"), ("c", "C", "pro", "active"))
    result = run_cli("run", env=dbs.env(RECONCILE_SKIP_IDS="a, b"))
    assert result.code == 0 and result.report["skipped"] == ["a", "b"] and result.report["created"] == ["c"]
    result = run_cli("run", "--skip", "b", env=dbs.env(RECONCILE_SKIP_IDS="a"))  # the flag replaces the variable
    assert result.report["skipped"] == ["b"] and result.report["created"] == ["a"]


def test_counts_always_add_up_to_the_total(dbs):
    dbs.add_product(("new", "N", "dev", "trial"), ("upd", "U2", "pro", "active"), ("arch", "A", "pro", "archived"),
                    ("same", "S", "dev", "active"), ("err", "E", "platinum", "active"), ("skip", "K", "dev", "active"),
                    ("gone", "G", "dev", "archived"))
    dbs.add_market(("upd", "U1", "PRO", "ACTIVE"), ("arch", "A", "PRO", "ACTIVE"), ("same", "S", "DEV", "ACTIVE"),
                   ("orphan", "O", "DEV", "ACTIVE"))
    report, _ = reconcile(dbs, skip_ids=("skip",))
    counts = report.counts
    kinds = ("created", "updated", "archived", "errors", "skipped")
    assert [counts[k] for k in kinds] == [1, 1, 1, 1, 1]
    assert counts["unchanged"] == 2  # "same", and "gone" (archived, absent: nothing to do)
    assert product_side_sum(report) == report.total == 7


def test_inbound_row_errors_are_listed_with_their_scope_and_counted_apart(dbs):
    dbs.add_product(("good-1", "G", "pro", "active"), ("bad.id", "B", "pro", "active"))
    report, events = reconcile(dbs, after_write=inbound_hook(dbs.settings(inbound_countries=("FR",))))
    assert report.status == "partial" and report.exit_code == 3
    assert report.counts["created"] == 2  # the tenant row itself is applied
    assert report.counts["errors"] == 0 and report.counts["inbound_errors"] == 1
    assert list(report.lists["errors"]) == [{"id": "bad.id", "error": "invalid_id_for_email", "scope": "inbound",
                                             "detail": report.lists["errors"][0]["detail"]}]
    assert [e["scope"] for e in events.of("tenant.error")] == ["inbound"]
    assert product_side_sum(report) == report.total == 2


def test_exit_6_names_the_holder_of_the_lock(dbs):
    dbs.add_product(("a", "A", "pro", "active"))
    with dbs.engine("marketplace").connect() as holder:
        holder.exec_driver_sql("SET application_name = 'nightly-reconcile-holder'")
        holder.exec_driver_sql("SELECT pg_advisory_lock(%s)", (lock_key(Shard()),))
        pid = holder.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        result = run_cli("run", env=dbs.env())
    assert result.code == 6
    report = result.report
    assert report["lock_holder"]["pid"] == pid
    assert report["lock_holder"]["application_name"] == "nightly-reconcile-holder"
    assert report["lock_holder"]["client_addr"] and report["lock_holder"]["since"].endswith("Z")
    assert f"pid {pid}" in report["error"] and "nightly-reconcile-holder" in report["error"]
    assert f"pid {pid}" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert dbs.market() == {}


def test_the_lock_holder_is_said_connected_since_its_session_began(dbs):
    """PostgreSQL keeps no time for when a lock was granted: the time given is the holder's session
    start (pg_stat_activity.backend_start), and the message says so."""
    import json

    dbs.add_product(("a", "A", "pro", "active"))
    with dbs.engine("marketplace").connect() as holder:
        holder.exec_driver_sql("SELECT pg_advisory_lock(%s)", (lock_key(Shard()),))
        started = holder.exec_driver_sql(
            "SELECT to_char(backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') "
            "FROM pg_stat_activity WHERE pid = pg_backend_pid()").scalar()
        result = run_cli("run", env=dbs.env())
        checked = run_cli("check", env=dbs.env())
    assert result.code == 6 and result.report["lock_holder"]["since"] == started
    assert f"connected since {started}" in result.report["error"], result.report["error"]
    lock = next(c for c in json.loads(checked.stdout.splitlines()[-1])["checks"] if c["check"] == "run lock")
    assert f"connected since {started}" in lock["detail"], lock


def test_the_runs_own_sessions_say_which_run_they_are(dbs):
    """pg_stat_activity shows `tenant-reconcile <mode> <shard> <run id>`, so a DBA can tell who holds what."""
    dbs.add_product(("a", "A", "pro", "active"))
    dbs.sql("marketplace", """CREATE TABLE seen (name text);
        CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO seen SELECT current_setting('application_name'); RETURN NEW; END $$;
        CREATE TRIGGER note BEFORE INSERT ON "Tenant" FOR EACH ROW EXECUTE FUNCTION note();""")
    result = run_cli("run", env=dbs.env())
    assert result.code == 0
    seen = dbs.sql("marketplace", "SELECT name FROM seen")[0].name
    assert seen == f"tenant-reconcile apply 0/1 {result.report['run_id'][:8]}"


def test_status_of_an_archived_tenant_absent_from_the_marketplace_is_in_sync(dbs):
    dbs.add_product(("old", "Old", "pro", "archived"))
    assert reconcile(dbs)[0].counts["unchanged"] == 1  # what a run says about it
    result = run_cli("status", "old", env=dbs.env())
    body = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.code == 0 and body["inSync"] is True and body["differences"] == []
    assert body["marketplace"]["exists"] is False


def test_the_counts_add_up_to_total_with_skipped_orphans_in_a_saved_plan_too(dbs, tmp_path):
    dbs.add_product(("a", "A", "pro", "active"), ("b", "B", "pro", "active"), ("c", "C", "gold", "active"))
    dbs.add_market(("b", "Old", "PRO", "ACTIVE"), ("o1", "O", "DEV", "ACTIVE"), ("o2", "O", "DEV", "ACTIVE"))
    env = dbs.env(RECONCILE_SKIP_IDS="o1,a")
    path = tmp_path / "plan.json"
    planned = run_cli("plan", "--out", str(path), env=env).report
    applied = run_cli("run", "--plan", str(path), env=env).report
    for report in (planned, applied):
        counts = report["counts"]
        assert sum(counts[k] for k in INVARIANT) + counts["archived"] == report["total"] == 4, counts
        assert sorted(report["skipped"]) == ["a", "o1"] and report["source"]["tenants"] == 3
