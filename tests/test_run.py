"""Reconcile semantics, consistency and the report, run in-process against real PostgreSQL databases."""

from __future__ import annotations

import datetime as dt

from reconcile.actions import COUNT_KEYS
from reconcile.pipeline import stage
from tests.pgtools import reconcile

KEYBUZZ_PRODUCT = [("ecomlg-001", "eComLG", "pro", "active"), ("kbz-001", "KeyBuzz 1", "starter", "active"),
                ("kbz-002", "KeyBuzz 2", "pro", "active"), ("kbz-003", "KeyBuzz 3", "dev", "trial"),
                ("kbz-004", "KeyBuzz 4", "enterprise", "active"), ("tenant_test_dev", "Test", "dev", "trial")]
KEYBUZZ_MARKET = [("ecomlg-001", "eComLG", "PRO", "ACTIVE"), ("kbz-001", "KeyBuzz 1", "STARTER", "ACTIVE"),
               ("kbz-002", "KeyBuzz 2", "PRO", "ACTIVE"), ("tenant_test_dev", "Test", "DEV", "TRIAL")]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def test_sync_all_scenario_creates_kbz_003_and_kbz_004(dbs):
    dbs.add_product(*KEYBUZZ_PRODUCT)
    dbs.add_market(*KEYBUZZ_MARKET)
    report, events = reconcile(dbs)
    assert report.status == "success" and report.exit_code == 0
    assert report.total == 6
    assert report.counts == {**dict.fromkeys(COUNT_KEYS, 0), "created": 2, "unchanged": 4}
    assert list(report.lists["created"]) == ["kbz-003", "kbz-004"]
    assert [e["tenant_id"] for e in events.of("tenant.created")] == ["kbz-003", "kbz-004"]
    assert set(dbs.market()) == {r[0] for r in KEYBUZZ_PRODUCT}


def test_create_sets_slug_mapped_fields_and_utc_timestamps(dbs):
    dbs.add_product(("Tenant_Test_X", "Name", " Pro ", None))
    before = utcnow()
    reconcile(dbs)
    row = dbs.market()["Tenant_Test_X"]
    assert (row["slug"], row["name"], row["plan"], row["status"]) == ("tenant-test-x", "Name", "PRO", "ACTIVE")
    assert row["createdAt"] == row["updatedAt"]
    assert before - dt.timedelta(seconds=5) <= row["updatedAt"] <= utcnow() + dt.timedelta(seconds=5)


def test_update_changes_only_differing_fields_and_reports_old_new(dbs):
    dbs.add_product(("a", "New name", "pro", "active"), ("b", "B", "starter", "suspended"))
    dbs.add_market(("a", "Old name", "PRO", "ACTIVE"), ("b", "B", "DEV", "ACTIVE"))
    report, events = reconcile(dbs)
    assert report.counts["updated"] == 2
    assert list(report.lists["updated"]) == [
        {"id": "a", "changes": {"name": ["Old name", "New name"]}},
        {"id": "b", "changes": {"plan": ["DEV", "STARTER"], "status": ["ACTIVE", "SUSPENDED"]}},
    ]
    assert events.of("tenant.updated")[0]["changes"] == {"name": ["Old name", "New name"]}
    market = dbs.market()
    assert (market["a"]["name"], market["b"]["plan"]) == ("New name", "STARTER")
    assert market["b"]["status"] == "SUSPENDED"
    assert market["a"]["updatedAt"] > dt.datetime(2021, 1, 1)


def test_archived_product_tenant_closes_the_marketplace_tenant(dbs):
    dbs.add_product(("a", "A", "pro", "archived"), ("b", "B", "pro", "archived"), ("c", "C", "pro", "archived"))
    dbs.add_market(("a", "A", "PRO", "ACTIVE"), ("b", "Other", "DEV", "CLOSED"))
    report, events = reconcile(dbs)
    assert list(report.lists["archived"]) == ["a"]
    assert report.counts["archived"] == 1 and report.counts["unchanged"] == 2
    assert report.counts["created"] == 0  # archived and absent: nothing
    market = dbs.market()
    assert market["a"]["status"] == "CLOSED" and "c" not in market
    assert (market["b"]["name"], market["b"]["plan"]) == ("Other", "DEV")  # archived: only status matters
    assert events.of("tenant.archived")[0]["previous_status"] == "ACTIVE"


def test_orphans_are_reported_and_left_alone_by_default(dbs):
    dbs.add_market(("ghost", "G", "PRO", "ACTIVE"))
    dbs.add_product(("a", "A", "pro", "active"))
    report, _ = reconcile(dbs)
    assert list(report.lists["orphans"]) == ["ghost"] and report.counts["orphans"] == 1
    assert dbs.market()["ghost"]["status"] == "ACTIVE"
    assert report.status == "success"


def test_orphans_archive_mode_closes_them(dbs):
    dbs.add_market(("ghost", "G", "PRO", "ACTIVE"), ("gone", "G", "PRO", "CLOSED"))
    dbs.add_product(("a", "A", "pro", "active"))
    report, events = reconcile(dbs, orphans="archive")
    assert report.counts["orphans"] == 2 and list(report.lists["archived"]) == ["ghost"]
    assert dbs.market()["ghost"]["status"] == "CLOSED"
    assert events.of("tenant.archived")[0]["orphan"] is True


def test_row_errors_are_listed_untouched_and_the_rest_proceeds(dbs):
    dbs.add_product(("bad-plan", "X", "gold", "active"), ("bad-status", "X", "pro", "deleted"),
                    ("bad-name", "   ", "pro", "active"), ("i" * 129, "X", "pro", "active"),
                    ("long-name", "n" * 256, "pro", "active"), ("ok", "OK", "pro", "active"))
    dbs.add_market(("bad-plan", "Old", "DEV", "ACTIVE"))
    report, events = reconcile(dbs)
    errors = {e["id"]: e["error"] for e in report.lists["errors"]}
    assert errors == {"bad-plan": "invalid_plan", "bad-status": "invalid_status", "bad-name": "invalid_name",
                      "i" * 129: "invalid_id", "long-name": "invalid_name"}
    assert report.counts["errors"] == 5 and report.counts["created"] == 1
    assert report.status == "partial" and report.exit_code == 3
    assert "gold" in next(e["detail"] for e in report.lists["errors"] if e["id"] == "bad-plan")
    assert dbs.market()["bad-plan"]["name"] == "Old"
    assert set(dbs.market()) == {"bad-plan", "ok"}
    assert len(events.of("tenant.error")) == 5
    assert report.counts["orphans"] == 0  # an error row present in the marketplace is not an orphan


def test_slug_already_used_by_another_marketplace_tenant_is_a_row_error(dbs):
    dbs.add_market(("other", "O", "PRO", "ACTIVE", "kbz-9"))
    dbs.add_product(("kbz_9", "K", "pro", "active"), ("other", "O", "pro", "active"),
                    ("fine", "F", "dev", "trial"))
    report, _ = reconcile(dbs)
    assert [(e["id"], e["error"]) for e in report.lists["errors"]] == [("kbz_9", "slug_conflict")]
    assert report.counts["created"] == 1 and list(report.lists["created"]) == ["fine"]
    assert "kbz_9" not in dbs.market()


def test_two_creates_with_the_same_slug_first_id_wins(dbs):
    dbs.add_product(("a-b", "1", "pro", "active"), ("a_b", "2", "pro", "active"), ("A_B", "3", "pro", "active"))
    report, _ = reconcile(dbs)
    assert list(report.lists["created"]) == ["A_B"]  # bytewise smallest: "A" < "a"
    assert {e["id"] for e in report.lists["errors"]} == {"a-b", "a_b"}
    assert report.counts["errors"] == 2


def test_total_is_the_sum_of_per_tenant_outcomes(dbs):
    dbs.add_product(("a", "A", "pro", "active"), ("b", "B", "pro", "active"), ("c", "C", "x", "active"),
                    ("d", "D", "pro", "archived"))
    dbs.add_market(("a", "A", "PRO", "ACTIVE"), ("d", "D", "PRO", "ACTIVE"), ("z", "Z", "PRO", "ACTIVE"))
    report, _ = reconcile(dbs)
    c = report.counts
    assert report.total == 4 == c["created"] + c["updated"] + c["archived"] + c["unchanged"] + c["errors"]


def test_second_run_writes_nothing_and_leaves_updated_at_alone(dbs):
    dbs.add_product(*KEYBUZZ_PRODUCT, ("x", "X", "pro", "archived"))
    dbs.add_market(("kbz-001", "Drifted", "DEV", "TRIAL"), ("x", "X", "PRO", "ACTIVE"))
    reconcile(dbs)
    after_first = dbs.market()
    report, events = reconcile(dbs)
    assert report.counts == {**dict.fromkeys(COUNT_KEYS, 0), "unchanged": 7}
    assert dbs.market() == after_first
    assert not events.of("tenant.created") and not events.of("tenant.updated")


def test_dry_run_reports_the_same_plan_and_writes_nothing(dbs):
    dbs.add_product(*KEYBUZZ_PRODUCT, ("x", "X", "pro", "archived"))
    dbs.add_market(("kbz-001", "Drifted", "DEV", "TRIAL"), ("x", "X", "PRO", "ACTIVE"))
    before = dbs.market()
    planned, events = reconcile(dbs, dry_run=True)
    assert planned.mode == "dry-run"
    assert dbs.market() == before
    assert not events.of("tenant.created") and not events.of("lock.acquired")
    applied, _ = reconcile(dbs)
    assert planned.counts == applied.counts
    assert planned.as_dict()["created"] == applied.as_dict()["created"]


def test_rollback_on_a_mid_apply_failure_writes_nothing(dbs):
    dbs.add_product(("a", "A", "pro", "active"), ("b", "B", "pro", "active"), ("c", "C", "pro", "active"))
    dbs.add_market(("c", "Old", "PRO", "ACTIVE"))
    dbs.sql("marketplace", """
        CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.id = 'b' THEN RAISE EXCEPTION 'tenant b refused'; END IF; RETURN NEW; END $$;
        CREATE TRIGGER boom BEFORE INSERT ON "Tenant" FOR EACH ROW EXECUTE FUNCTION boom();""")
    report, events = reconcile(dbs)
    assert report.status == "failed" and report.exit_code == 7
    assert "tenant b refused" in report.error
    assert set(dbs.market()) == {"c"} and dbs.market()["c"]["name"] == "Old"  # the update rolled back too
    assert len(events.of("reconcile.report")) == 1
    assert not events.of("tenant.created")


def test_update_changed_meanwhile_is_a_conflict_left_for_next_run(dbs, monkeypatch):
    dbs.add_product(("a", "A", "pro", "active"), ("b", "B", "pro", "active"), ("new", "N", "dev", "trial"),
                    ("gone", "G", "pro", "archived"))
    dbs.add_market(("a", "Old", "PRO", "ACTIVE"), ("b", "Old", "PRO", "ACTIVE"), ("gone", "G", "PRO", "ACTIVE"))
    real_stage = stage.stage

    def stage_then_interfere(conn, plan, *args):
        staged = real_stage(conn, plan, *args)
        # Another writer commits between our snapshot and our writes.
        dbs.sql("marketplace", """UPDATE "Tenant" SET name = 'Someone else' WHERE id = 'a';
                                  UPDATE "Tenant" SET plan = 'DEV' WHERE id = 'gone';""")
        dbs.add_market(("new", "Racer", "DEV", "TRIAL"))
        return staged

    monkeypatch.setattr(stage, "stage", stage_then_interfere)
    report, events = reconcile(dbs)
    assert report.status == "partial" and report.exit_code == 3, report.error
    assert sorted(report.lists["conflicts"]) == ["a", "gone", "new"]
    assert report.counts["conflicts"] == 3 and report.counts["updated"] == 1 and report.counts["created"] == 0
    assert report.counts["archived"] == 0
    market = dbs.market()
    assert (market["a"]["name"], market["b"]["name"], market["new"]["name"]) == ("Someone else", "B", "Racer")
    assert market["gone"]["status"] == "ACTIVE"
    assert {e["tenant_id"] for e in events.of("tenant.conflict")} == {"a", "gone", "new"}


def test_report_has_every_field_of_spec_section_5(dbs):
    dbs.add_product(*KEYBUZZ_PRODUCT)
    dbs.add_market(*KEYBUZZ_MARKET)
    _, events = reconcile(dbs)
    report = events.of("reconcile.report")[0]
    for key in ("event", "level", "timestamp", "run_id", "mode", "status", "shard", "total", "counts", "created",
                "updated", "archived", "orphans", "conflicts", "errors", "truncated", "timings_ms", "source",
                "target"):
        assert key in report, key
    assert set(report["counts"]) == set(COUNT_KEYS)
    assert set(report["timings_ms"]) == {"snapshot", "diff", "apply", "total"}
    assert report["mode"] == "apply" and report["shard"] == "0/1" and report["truncated"] is False
    assert dt.datetime.strptime(report["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert report["source"] == {"db": dbs.product.display, "tenants": 6}
    assert report["target"] == {"db": dbs.marketplace.display, "tenants": 4}
    assert all(e["run_id"] == "test" for e in events.events)


def test_id_lists_are_capped_but_counts_stay_exact(dbs):
    dbs.add_product(*[(f"t{i:03d}", "N", "pro", "active") for i in range(30)])
    dbs.add_market(*[(f"z{i:03d}", "N", "PRO", "ACTIVE") for i in range(12)])
    report, _ = reconcile(dbs, report_id_limit=10)
    body = report.as_dict()
    assert body["counts"]["created"] == 30 and len(body["created"]) == 10
    assert body["counts"]["orphans"] == 12 and len(body["orphans"]) == 10
    assert body["truncated"] is True


def test_names_with_tabs_newlines_backslashes_and_unicode_round_trip(dbs):
    weird = "Tab\there\nnew \\N back\\slash ünïcødé 'q' \"dq\""
    dbs.add_product(("w-1", weird, "pro", "active"), ("w\\2", "x", "pro", "active"))
    reconcile(dbs)
    market = dbs.market()
    assert market["w-1"]["name"] == weird and market["w\\2"]["slug"] == "w\\2"
    report, _ = reconcile(dbs)
    assert report.counts["unchanged"] == 2


def test_extra_columns_are_ignored(dbs):
    dbs.sql("product", "ALTER TABLE tenants ADD COLUMN region text DEFAULT 'eu'")
    dbs.sql("marketplace", 'ALTER TABLE "Tenant" ADD COLUMN "stripeId" text')
    dbs.add_product(("a", "A", "pro", "active"))
    report, _ = reconcile(dbs)
    assert report.counts["created"] == 1


def test_rows_are_never_deleted(dbs):
    dbs.add_market(("ghost", "G", "PRO", "ACTIVE"))
    dbs.sql("marketplace", """
        CREATE FUNCTION nodelete() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'delete attempted'; END $$;
        CREATE TRIGGER nodelete BEFORE DELETE ON "Tenant" FOR EACH ROW EXECUTE FUNCTION nodelete();""")
    dbs.add_product(("a", "A", "pro", "archived"))
    report, _ = reconcile(dbs, orphans="archive")
    assert report.status == "success"
    assert set(dbs.market()) == {"ghost"}


def test_product_snapshot_is_read_in_a_repeatable_read_read_only_transaction(dbs):
    # A view that writes the reading transaction's settings into the name the snapshot copies.
    dbs.sql("product", """
        ALTER TABLE tenants RENAME TO tenants_data;
        CREATE VIEW tenants AS
          SELECT id, name || '|' || current_setting('transaction_isolation') || '|'
                           || current_setting('transaction_read_only') AS name, plan, status
          FROM tenants_data;
        INSERT INTO tenants_data (id, name) VALUES ('a', 'A');""")
    reconcile(dbs)
    assert dbs.market()["a"]["name"] == "A|repeatable read|on"
