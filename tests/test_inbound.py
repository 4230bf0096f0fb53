"""Inbound addresses: set-based, idempotent, case-tolerant, safe without unique constraints."""

from __future__ import annotations

import re

import pytest

from reconcile.inbound import inbound_hook, tokens
from reconcile.testing.schema import UNIQUE_CONSTRAINTS
from tests.pgtools import reconcile, run_cli

EMAIL = re.compile(r"^amazon\.(?P<tenant>[A-Za-z0-9][A-Za-z0-9_-]*)\.(?P<cc>[a-z]{2})\.(?P<token>[a-z0-9]{6})"
                   r"@inbound\.keybuzz\.io$")


def ensure(dbs, countries=("FR", "DE"), **kw):
    settings = dbs.settings(inbound_countries=countries)
    return reconcile(dbs, after_write=inbound_hook(settings), inbound_countries=countries, **kw)


def addresses(dbs):
    return dbs.sql("marketplace", """SELECT "tenantId" AS tenant, marketplace, country, token, "emailAddress" AS email,
                                            "connectionId" AS conn, "validationStatus" AS vs, "pipelineStatus" AS ps,
                                            "marketplaceStatus" AS ms, "updatedAt" FROM inbound_addresses
                                     ORDER BY "tenantId", country, id""")


def connections(dbs):
    return dbs.sql("marketplace", """SELECT id, "tenantId" AS tenant, marketplace, countries FROM inbound_connections
                                     ORDER BY "tenantId", "createdAt", id""")


def test_every_active_tenant_gets_one_connection_and_one_address_per_country(dbs):
    dbs.add_product(("kbz-001", "A", "pro", "active"), ("kbz-003", "B", "dev", "trial"))
    dbs.add_market(("kbz-001", "A", "PRO", "ACTIVE"))
    report, events = ensure(dbs)
    assert report.counts["inbound_created"] == 4 and report.status == "success"
    conns = connections(dbs)
    assert [(c.tenant, c.marketplace, c.countries) for c in conns] == [
        ("kbz-001", "amazon", ["FR", "DE"]), ("kbz-003", "amazon", ["FR", "DE"])]
    rows = addresses(dbs)
    assert [(a.tenant, a.marketplace, a.country) for a in rows] == [
        ("kbz-001", "AMAZON", "DE"), ("kbz-001", "AMAZON", "FR"), ("kbz-003", "AMAZON", "DE"),
        ("kbz-003", "AMAZON", "FR")]
    for a in rows:
        match = EMAIL.match(a.email)
        assert match and match["tenant"] == a.tenant and match["cc"] == a.country.lower()
        assert match["token"] == a.token
        assert (a.vs, a.ps, a.ms) == ("PENDING", "PENDING", "PENDING")
        assert a.conn == next(c.id for c in conns if c.tenant == a.tenant)
    assert len({c.id for c in conns}) == 2 and all(re.fullmatch(r"[0-9a-f]{32}", c.id) for c in conns)
    created = events.of("inbound.created")
    assert sorted((e["tenant_id"], e["country"]) for e in created) == [
        ("kbz-001", "DE"), ("kbz-001", "FR"), ("kbz-003", "DE"), ("kbz-003", "FR")]
    assert all(e["run_id"] == "test" for e in created)


def test_closed_orphan_error_and_archived_tenants_get_none(dbs):
    dbs.add_product(("ok", "OK", "pro", "active"), ("closed", "C", "pro", "closed"),
                    ("archived", "A", "pro", "archived"), ("bad", "B", "gold", "active"))
    dbs.add_market(("archived", "A", "PRO", "ACTIVE"), ("bad", "B", "PRO", "ACTIVE"), ("orphan", "O", "PRO", "ACTIVE"))
    report, _ = ensure(dbs, countries=("FR",))
    assert report.counts["archived"] == 1
    assert {a.tenant for a in addresses(dbs)} == {"ok"}
    assert report.counts["inbound_created"] == 1


def test_second_run_creates_nothing_and_keeps_tokens(dbs):
    dbs.add_product(("a", "A", "pro", "active"), ("b", "B", "pro", "active"))
    ensure(dbs)
    before = addresses(dbs)
    report, events = ensure(dbs)
    assert report.counts["inbound_created"] == 0 and not events.of("inbound.created")
    assert addresses(dbs) == before


def test_existing_rows_in_any_case_are_reused_and_countries_extended_not_replaced(dbs):
    dbs.add_product(("t1", "T", "pro", "active"))
    dbs.add_market(("t1", "T", "PRO", "ACTIVE"))
    dbs.sql("marketplace", """
        INSERT INTO inbound_connections (id, "tenantId", marketplace, countries, "updatedAt")
        VALUES ('c-old', 't1', 'AMAZON', '["fr", "IT"]', now());
        INSERT INTO inbound_addresses (id, "connectionId", "tenantId", marketplace, country, token, "emailAddress",
                                       "updatedAt")
        VALUES ('a-old', 'c-old', 't1', 'amazon', 'fr', 'oldtok', 'amazon.t1.fr.oldtok@inbound.keybuzz.io', now());""")
    report, _ = ensure(dbs)
    assert report.counts["inbound_created"] == 1
    assert [(c.id, c.countries) for c in connections(dbs)] == [("c-old", ["fr", "IT", "FR", "DE"])]
    rows = addresses(dbs)
    assert [(a.country, a.token, a.conn) for a in rows] == [("DE", rows[0].token, "c-old"), ("fr", "oldtok", "c-old")]


def test_a_connection_whose_countries_is_not_an_array_is_left_alone_with_a_warning(dbs):
    dbs.add_product(("t1", "T", "pro", "active"))
    dbs.add_market(("t1", "T", "PRO", "ACTIVE"))
    dbs.sql("marketplace", """INSERT INTO inbound_connections (id, "tenantId", marketplace, countries, "updatedAt")
                              VALUES ('c-odd', 't1', 'amazon', '{"FR": true}', now())""")
    report, events = ensure(dbs)
    assert report.counts["inbound_created"] == 2
    assert [(c.id, c.countries) for c in connections(dbs)] == [("c-odd", {"FR": True})]
    assert events.of("inbound.countries_not_an_array")[0]["tenant_ids"] == ["t1"]


def test_without_unique_constraints_duplicates_are_reported_never_added_to(dbs):
    for table, constraint in UNIQUE_CONSTRAINTS.items():
        dbs.sql("marketplace", f'ALTER TABLE {table} DROP CONSTRAINT "{constraint}"')
    dbs.add_product(("t1", "T", "pro", "active"))
    dbs.add_market(("t1", "T", "PRO", "ACTIVE"))
    dbs.sql("marketplace", """
        INSERT INTO inbound_connections (id, "tenantId", marketplace, countries, "createdAt", "updatedAt") VALUES
          ('c2', 't1', 'amazon', '["FR"]', '2024-02-01', now()),
          ('c1', 't1', 'AMAZON', '["FR"]', '2024-01-01', now());
        INSERT INTO inbound_addresses (id, "connectionId", "tenantId", marketplace, country, token, "emailAddress",
                                       "updatedAt") VALUES
          ('a1', 'c1', 't1', 'AMAZON', 'FR', 'aaaaaa', 'amazon.t1.fr.aaaaaa@inbound.keybuzz.io', now()),
          ('a2', 'c2', 't1', 'amazon', 'fr', 'bbbbbb', 'amazon.t1.fr.bbbbbb@inbound.keybuzz.io', now());""")
    report, events = ensure(dbs)
    assert report.counts["inbound_created"] == 1
    rows = addresses(dbs)
    assert sorted(a.country for a in rows) == ["DE", "FR", "fr"]
    assert next(a.conn for a in rows if a.country == "DE") == "c1"  # the oldest connection
    assert len(connections(dbs)) == 2
    kinds = {e["kind"]: e for e in events.of("inbound.duplicates")}
    assert kinds["connection"]["tenant_ids"] == ["t1"] and kinds["connection"]["level"] == "warning"
    assert kinds["address"]["addresses"] == [{"tenant_id": "t1", "country": "FR", "rows": 2}]
    again, _ = ensure(dbs)
    assert again.counts["inbound_created"] == 0 and len(addresses(dbs)) == 3


def test_tenant_id_unfit_for_an_email_is_a_row_error(dbs):
    dbs.add_product(("good-1", "G", "pro", "active"), ("bad.id", "B", "pro", "active"), ("_x", "X", "pro", "active"))
    report, events = ensure(dbs, countries=("FR",))
    assert report.counts["created"] == 3  # the tenants themselves are fine
    errors = {e["id"]: e["error"] for e in report.lists["errors"]}
    assert errors == {"bad.id": "invalid_id_for_email", "_x": "invalid_id_for_email"}
    assert report.status == "partial" and report.exit_code == 3
    assert {a.tenant for a in addresses(dbs)} == {"good-1"}
    assert {e["tenant_id"] for e in events.of("tenant.error")} == {"bad.id", "_x"}


def test_dry_run_counts_what_it_would_create_and_writes_nothing(dbs):
    dbs.add_product(("a", "A", "pro", "active"), ("b", "B", "pro", "active"))
    dbs.add_market(("a", "A", "PRO", "ACTIVE"))
    report, events = ensure(dbs, dry_run=True)
    assert report.counts["inbound_created"] == 4
    assert addresses(dbs) == [] and connections(dbs) == []
    assert not events.of("inbound.created")


def test_cli_flag_config_and_domain(dbs, tmp_path):
    dbs.add_product(("a", "A", "pro", "active"))
    result = run_cli("run", "--ensure-inbound", "fr, de", env=dbs.env(INBOUND_DOMAIN="mail.example.test"))
    assert result.code == 0, result.stderr
    assert result.report["counts"]["inbound_created"] == 2
    assert all(e["email"].endswith("@mail.example.test") for e in result.of("inbound.created"))
    cfg = tmp_path / "c.toml"
    cfg.write_text('[inbound]\ncountries = ["FR", "ES"]\n')
    result = run_cli("run", "--config", str(cfg), env=dbs.env())
    assert [e["country"] for e in result.of("inbound.created")] == ["ES"]


@pytest.mark.parametrize("value", ["FRA", "F1", "FR,,X"])
def test_invalid_country_is_a_config_error(dbs, value):
    result = run_cli("run", "--ensure-inbound", value, env=dbs.env())
    assert result.code == 2 and "--ensure-inbound" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_plain_run_does_not_touch_inbound(dbs):
    dbs.add_product(("a", "A", "pro", "active"))
    result = run_cli("run", env=dbs.env())
    assert result.code == 0 and addresses(dbs) == []


def test_tokens_are_six_characters_of_a_to_z_and_digits_and_do_not_repeat():
    drawn = list(tokens(20_000))
    assert all(re.fullmatch(rb"[a-z0-9]{6}", t) for t in drawn)
    assert len(set(drawn)) > 19_990
    letters = b"".join(drawn)
    counts = [letters.count(bytes([c])) for c in b"abcdefghijklmnopqrstuvwxyz0123456789"]
    expected = len(letters) / 36
    assert all(abs(c - expected) < expected * 0.1 for c in counts)  # uniform: no modulo bias


def test_a_tenant_reopened_by_this_run_gets_its_addresses(dbs):
    dbs.add_product(("back", "B", "pro", "active"))
    dbs.add_market(("back", "B", "PRO", "CLOSED"))
    report, _ = ensure(dbs, countries=("FR",))
    assert report.counts["updated"] == 1 and report.counts["inbound_created"] == 1
    assert [(a.tenant, a.country) for a in addresses(dbs)] == [("back", "FR")]


def test_a_deleted_address_is_recreated_next_run(dbs):
    dbs.add_product(("a", "A", "pro", "active"))
    ensure(dbs)
    dbs.sql("marketplace", "DELETE FROM inbound_addresses WHERE country = 'DE'")
    report, _ = ensure(dbs)
    assert report.counts["inbound_created"] == 1
    assert sorted(a.country for a in addresses(dbs)) == ["DE", "FR"]


def test_duplicates_found_are_inbound_row_errors_counted_apart(dbs):
    for table, constraint in UNIQUE_CONSTRAINTS.items():
        dbs.sql("marketplace", f'ALTER TABLE {table} DROP CONSTRAINT "{constraint}"')
    dbs.add_product(("t1", "T", "pro", "active"), ("t2", "T2", "pro", "active"))
    dbs.add_market(("t1", "T", "PRO", "ACTIVE"), ("t2", "T2", "PRO", "ACTIVE"))
    dbs.sql("marketplace", """
        INSERT INTO inbound_connections (id, "tenantId", marketplace, countries, "createdAt", "updatedAt") VALUES
          ('c1', 't1', 'amazon', '["FR"]', '2024-01-01', now()), ('c2', 't1', 'AMAZON', '["FR"]', '2024-02-01', now());
        INSERT INTO inbound_addresses (id, "connectionId", "tenantId", marketplace, country, token, "emailAddress",
                                       "updatedAt") VALUES
          ('a1', 'c1', 't1', 'AMAZON', 'FR', 'aaaaaa', 'amazon.t1.fr.aaaaaa@inbound.keybuzz.io', now()),
          ('a2', 'c1', 't1', 'amazon', 'fr', 'bbbbbb', 'amazon.t1.fr.bbbbbb@inbound.keybuzz.io', now());""")
    report, events = ensure(dbs, countries=("FR",))
    errors = sorted((e["id"], e["error"], e["scope"]) for e in report.lists["errors"])
    assert errors == [("t1", "duplicate_inbound_address", "inbound"), ("t1", "duplicate_inbound_connection", "inbound")]
    assert report.counts["inbound_errors"] == 2 and report.counts["errors"] == 0
    assert report.status == "partial" and report.exit_code == 3
    assert report.counts["inbound_created"] == 1  # t2's address: the rest proceeds
    assert {e["tenant_id"] for e in events.of("tenant.error")} == {"t1"}


def test_skipped_tenants_get_no_inbound_rows(dbs):
    dbs.add_product(("keep", "K", "pro", "active"), ("skip-me", "S", "pro", "active"))
    dbs.add_market(("skip-me", "S", "PRO", "ACTIVE"), ("skip-orphan", "O", "PRO", "ACTIVE"))
    report, _ = ensure(dbs, countries=("FR",), skip_ids=("skip-me", "skip-orphan"), orphans="archive")
    assert report.counts["skipped"] == 2 and report.counts["inbound_created"] == 1
    assert {a.tenant for a in addresses(dbs)} == {"keep"}
    assert {c.tenant for c in connections(dbs)} == {"keep"}


def test_new_inbound_rows_get_unique_32_hex_ids_increasing_in_tenant_order(dbs):
    ids = [f"t{i:03d}" for i in (7, 3, 11, 1, 5, 9, 2)]
    dbs.add_product(*[(i, i.upper(), "pro", "active") for i in ids])
    ensure(dbs)
    dbs.add_product(("t000", "late", "pro", "active"))
    ensure(dbs)  # a second backfill: its ids must not collide with the first one's
    conns = dbs.sql("marketplace", 'SELECT id, "tenantId" AS tenant FROM inbound_connections')
    addrs = dbs.sql("marketplace", 'SELECT id, "tenantId" AS tenant, country FROM inbound_addresses')
    every = [r.id for r in conns] + [r.id for r in addrs]
    assert len(set(every)) == len(every) == 8 + 16
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in every)
    first = [r for r in conns if r.tenant != "t000"]
    assert [r.tenant for r in sorted(first, key=lambda r: r.id)] == sorted(ids)
    first_addresses = sorted((r for r in addrs if r.tenant != "t000"), key=lambda r: r.id)
    assert [(r.tenant, r.country) for r in first_addresses] == [(i, cc) for i in sorted(ids) for cc in ("FR", "DE")]
    # Later statements get later ids: the second backfill's rows come after the first one's.
    late = next(r.id for r in conns if r.tenant == "t000")
    assert late > max(r.id for r in first)
