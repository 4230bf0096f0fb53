"""Hostile and odd data: SQL is never built from data (safe with standard_conforming_strings off),
a LATIN1 product database works, NULLs where NOT NULL was dropped are repaired or are row errors,
and a mapping target the marketplace enum lacks is a configuration error before anything is
written."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from reconcile.testing.schema import MARKETPLACE_DDL, PRODUCT_DDL
from tests.faults.harness import (
    assert_ended,
    assert_no_secret,
    assert_nothing_written,
    assert_success,
    base_env,
    direct_url,
    market_state,
    outputs,
    run,
    tenant_rows,
)
from tests.pgtools import Databases

CRAFTED_IDS = [
    "x\\' OR true --",
    "x\\\\' OR 1=1 --",
    "a'); SELECT pg_sleep(8); --",
    "' UNION SELECT version() --",
]


def env_of(dbs: Databases, **extra: str) -> dict[str, str]:
    return base_env(dbs, direct_url(dbs.product), direct_url(dbs.marketplace), **extra)


def scs_off(dbs: Databases) -> None:
    """Both databases with standard_conforming_strings off for every new session (backslashes in
    ordinary string literals are escapes again)."""
    for which, db in (("product", dbs.product), ("marketplace", dbs.marketplace)):
        dbs.sql(which, f'ALTER DATABASE "{db.url.database}" SET standard_conforming_strings = off')
    assert dbs.sql("product", "SHOW standard_conforming_strings")[0][0] == "off"


def server_version(dbs: Databases) -> str:
    return str(dbs.sql("product", "SELECT version()")[0][0])


def assert_no_version(out, version: str) -> None:
    for text in outputs(out):
        assert version not in text, "the server's version() text is in the output: a crafted id ran as SQL"


def seed_bystanders(dbs: Databases) -> None:
    """Tenants a leaking predicate would touch: two new ones, one drifted."""
    dbs.add_product(("by-new-1", "Bystander 1", "pro", "active"), ("by-new-2", "Bystander 2", "dev", "trial"),
                    ("by-drift", "Drifted in product", "pro", "active"))
    dbs.add_market(("by-drift", "Drifted in marketplace", "PRO", "ACTIVE"))


def test_sync_of_a_crafted_id_that_is_not_a_tenant_is_not_found_and_touches_nothing_under_scs_off(dbs):
    scs_off(dbs)
    seed_bystanders(dbs)
    before = market_state(dbs)
    version = server_version(dbs)
    for crafted in CRAFTED_IDS:
        out = run("sync", crafted, env=env_of(dbs), deadline=30)
        assert_ended(out, 8)  # pg_sleep(8) never runs
        assert out.code == 4, f"sync {crafted!r}: exit {out.code}, expected 4 (not found){out.tail()}"
        assert out.last_json == {"success": False, "error": "Tenant not found in product DB"}
        assert_no_version(out, version)
        assert_no_secret(*outputs(out))
        assert_nothing_written(dbs, before)


def test_sync_of_a_crafted_id_that_is_a_tenant_touches_that_tenant_only_under_scs_off(dbs):
    scs_off(dbs)
    seed_bystanders(dbs)
    dbs.add_product(*[(crafted, f"Name of {crafted}", "pro", "active") for crafted in CRAFTED_IDS])
    version = server_version(dbs)
    done: list[str] = []
    for crafted in CRAFTED_IDS:
        out = run("sync", crafted, "--no-inbound", env=env_of(dbs), deadline=30)
        assert_ended(out, 8)
        assert out.code == 0, f"sync {crafted!r}: exit {out.code}, expected 0{out.tail()}"
        report = out.report
        assert report["total"] == 1 and report["created"] == [crafted], \
            f"sync {crafted!r} acted on more than its own tenant: {report['counts']}, created {report['created']}"
        done.append(crafted)
        rows = tenant_rows(dbs)
        assert set(rows) == {"by-drift", *done}, f"after sync {crafted!r} the marketplace holds {sorted(rows)}"
        assert rows[crafted][1] == f"Name of {crafted}"
        assert rows["by-drift"][1] == "Drifted in marketplace", "a bystander was updated"
        assert out.last_json["success"] is True and out.last_json["tenant"]["id"] == crafted
        assert_no_version(out, version)
        assert_no_secret(*outputs(out))


AWKWARD = [
    ("o'brien", "O'Brien & Sons"),
    ("back\\slash", "C:\\new\\table"),
    ("q\\'x", "it\\'s \"quoted\" \\\\ twice"),
    ("tab-in-name", "a\\tb is not a tab"),
]


def expected_rows(pairs: list[tuple[str, str]]) -> dict[str, tuple[str, str, str, str]]:
    return {i: (i.replace("_", "-").lower(), name, "PRO", "ACTIVE") for i, name in pairs}


def test_ids_and_names_with_quotes_and_backslashes_round_trip_exactly_under_scs_off(dbs):
    scs_off(dbs)
    dbs.add_product(*[(i, name, "pro", "active") for i, name in AWKWARD])
    first = assert_success(run("run", env=env_of(dbs), deadline=60))
    assert first["counts"]["created"] == len(AWKWARD)
    assert tenant_rows(dbs) == expected_rows(AWKWARD)
    second = assert_success(run("run", env=env_of(dbs), deadline=60))
    assert second["counts"]["unchanged"] == len(AWKWARD), second["counts"]


def test_sync_of_a_tenant_with_quotes_and_backslashes_updates_exactly_it_under_scs_off(dbs):
    scs_off(dbs)
    dbs.add_product(*[(i, name, "pro", "active") for i, name in AWKWARD])
    dbs.add_market(*[(i, "Old", "PRO", "ACTIVE") for i, _ in AWKWARD])
    before = tenant_rows(dbs)
    for position, (tenant, name) in enumerate(AWKWARD):
        out = run("sync", tenant, "--no-inbound", env=env_of(dbs), deadline=30)
        assert out.code == 0, f"sync {tenant!r}: exit {out.code}{out.tail()}"
        assert out.report["counts"]["updated"] == 1, f"sync {tenant!r}: {out.report['counts']}"
        rows = tenant_rows(dbs)
        for other, other_name in AWKWARD:
            want = other_name if AWKWARD.index((other, other_name)) <= position else "Old"
            assert rows[other][1] == want, f"after sync {tenant!r}: {other!r} has name {rows[other][1]!r}"
        assert rows[tenant][0] == before[tenant][0]
        assert out.last_json["tenant"] == {"id": tenant, "name": name, "plan": "PRO", "status": "ACTIVE"}


@contextmanager
def latin1_product(pg_server, encoding: str = "LATIN1") -> Iterator[Databases]:
    name = f"rc_{uuid.uuid4().hex[:10]}_{encoding.lower()}"
    pg_server._autocommit(f"""CREATE DATABASE "{name}" ENCODING '{encoding}' LC_COLLATE 'C' LC_CTYPE 'C'
                              TEMPLATE template0""")
    try:
        yield pg_server.url_for(name)
    finally:
        pg_server.drop_database(name)


NAMES_IN_LATIN1 = [("soc-gen", "Société Générale"), ("muller", "Müller & Söhne"),
                   ("aero", "Ærøskøbing Façade"), ("plain", "Plain ASCII")]


def test_a_latin1_product_database_gives_exactly_the_right_names(dbs, pg_server):
    with latin1_product(pg_server) as product:
        latin1 = Databases(product, dbs.marketplace)
        try:
            latin1.sql("product", PRODUCT_DDL)
            assert latin1.sql("product", "SHOW server_encoding")[0][0] == "LATIN1"
            latin1.add_product(*[(i, name, "pro", "active") for i, name in NAMES_IN_LATIN1])
            env = base_env(dbs, direct_url(product), direct_url(dbs.marketplace))
            first = assert_success(run("run", env=env, deadline=60))
            assert first["counts"]["created"] == len(NAMES_IN_LATIN1), first["counts"]
            assert {i: row[1] for i, row in tenant_rows(dbs).items()} == dict(NAMES_IN_LATIN1)
            second = assert_success(run("run", env=env, deadline=60))
            assert second["counts"]["unchanged"] == len(NAMES_IN_LATIN1), second["counts"]
        finally:
            latin1.dispose()


# In WIN1252 the euro sign is byte 0x80, below 'é' (0xE9); in UTF-8 it sorts above it. Ids whose
# server-encoding bytes sort otherwise than their UTF-8 bytes.
IDS_IN_WIN1252 = ["a€", "aé", "café", "b€-1", "bé-2", "plain", "ÿ-last", "Œuvre", "z"]


def test_a_win1252_product_database_is_diffed_in_utf8_order_and_a_second_run_changes_nothing(dbs, pg_server):
    with latin1_product(pg_server, "WIN1252") as product:
        win = Databases(product, dbs.marketplace)
        try:
            win.sql("product", PRODUCT_DDL)
            win.add_product(*[(i, f"Name {i}", "pro", "active") for i in IDS_IN_WIN1252])
            env = base_env(dbs, direct_url(product), direct_url(dbs.marketplace))
            first = assert_success(run("run", env=env, deadline=60))
            assert first["counts"]["created"] == len(IDS_IN_WIN1252), first["counts"]
            second = assert_success(run("run", env=env, deadline=60))
            assert second["counts"]["unchanged"] == len(IDS_IN_WIN1252), second["counts"]
            assert sorted(tenant_rows(dbs)) == sorted(IDS_IN_WIN1252)
        finally:
            win.dispose()


@pytest.mark.parametrize("encoding", ["LATIN1", "WIN1252"])
def test_shards_of_a_non_utf8_product_database_hold_the_same_tenants_as_in_python(dbs, pg_server, encoding):
    ids = [f"{stem}-{n}" for stem in ("café", "müller", "t000é", "søren") for n in range(12)]
    with latin1_product(pg_server, encoding) as product:
        other = Databases(product, dbs.marketplace)
        try:
            other.sql("product", PRODUCT_DDL)
            other.add_product(*[(i, f"Name {i}", "pro", "active") for i in ids])
            env = base_env(dbs, direct_url(product), direct_url(dbs.marketplace))
            assert assert_success(run("run", env=env, deadline=60))["counts"]["created"] == len(ids)
            unchanged = 0
            for index in range(3):
                report = assert_success(run("plan", "--shard", f"{index}/3", env=env, deadline=60))
                counts = report["counts"]
                # A tenant hashed into another shard on one side only shows as a create and an orphan.
                assert (counts["created"], counts["orphans"], counts["archived"]) == (0, 0, 0), counts
                unchanged += counts["unchanged"]
            assert unchanged == len(ids)
        finally:
            other.dispose()


def test_a_null_marketplace_name_is_repaired_not_a_conflict_forever(dbs):
    dbs.sql("marketplace", 'ALTER TABLE "Tenant" ALTER COLUMN name DROP NOT NULL')
    dbs.add_product(("a", "Alpha", "pro", "active"), ("b", "Beta", "pro", "active"))
    dbs.add_market(("a", "Alpha", "PRO", "ACTIVE"), ("b", "Beta", "PRO", "ACTIVE"))
    dbs.sql("marketplace", """UPDATE "Tenant" SET name = NULL WHERE id = 'b'""")
    first = run("run", env=env_of(dbs), deadline=60)
    assert first.code == 0, f"exit {first.code}{first.tail()}"
    counts = first.report["counts"]
    assert counts["updated"] == 1 and counts["conflicts"] == 0, counts
    assert tenant_rows(dbs)["b"][1] == "Beta"
    second = assert_success(run("run", env=env_of(dbs), deadline=60))
    assert second["counts"]["unchanged"] == 2 and second["counts"]["updated"] == 0, second["counts"]


def test_a_null_product_name_is_a_row_error_and_the_others_are_applied(dbs):
    dbs.sql("product", "ALTER TABLE tenants ALTER COLUMN name DROP NOT NULL")
    dbs.add_product(("nameless", None, "pro", "active"), ("a", "Alpha", "pro", "active"),
                    ("b", "Beta", "dev", "trial"))
    out = run("run", env=env_of(dbs), deadline=60)
    assert_ended(out, 60)
    assert out.code == 3, f"exit {out.code}, expected 3 (partial){out.tail()}"
    report = out.report
    assert [(e["id"], e["error"]) for e in report["errors"]] == [("nameless", "invalid_name")], report["errors"]
    assert sorted(report["created"]) == ["a", "b"]
    assert set(tenant_rows(dbs)) == {"a", "b"}
    assert "Traceback" not in out.stderr


@contextmanager
def marketplace_without(pg_server, enum: str, labels: tuple[str, ...]) -> Iterator[object]:
    """A marketplace database whose `enum` has only `labels` (the rest of the schema as usual)."""
    name = f"rc_{uuid.uuid4().hex[:10]}_m_enum"
    pg_server.create_database(name)
    try:
        url = pg_server.url_for(name)
        market = Databases(url, url)
        quoted = ", ".join(f"'{label}'" for label in labels)
        market.sql("marketplace", f'CREATE TYPE "{enum}" AS ENUM ({quoted})')
        market.sql("marketplace", MARKETPLACE_DDL)
        market.dispose()
        yield url
    finally:
        pg_server.drop_database(name)


def assert_config_error_naming(out, *words: str) -> None:
    assert_ended(out, 30)
    assert out.code == 2, f"exit {out.code}, expected 2 (configuration error){out.tail()}"
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {lines}"
    for word in words:
        assert word in lines[0], f"the message does not name {word}: {lines[0]!r}"
    assert not [r for r in out.reports if r.get("status") == "success"], "a success report for a run that cannot run"
    assert "Traceback" not in out.stderr
    assert_no_secret(*outputs(out))


@pytest.mark.parametrize("command", ["plan", "run"])
def test_a_marketplace_enum_lacking_a_mapped_label_is_exit_2_naming_it_before_anything_is_written(
        dbs, pg_server, command):
    with marketplace_without(pg_server, "BillingPlan", ("DEV", "STARTER", "PRO")) as market_url:
        market = Databases(market_url, market_url)
        try:
            dbs.add_product(("a", "Alpha", "pro", "active"), ("big", "Big Co", "enterprise", "active"))
            before = market_state(market)
            out = run(command, env=base_env(dbs, direct_url(dbs.product), direct_url(market_url)), deadline=30)
            assert_config_error_naming(out, "ENTERPRISE", "BillingPlan")
            assert_nothing_written(market, before)
        finally:
            market.dispose()


@pytest.mark.parametrize(("table", "entry", "label", "enum"), [
    ("mapping.plan", 'gold = "GOLD"', "GOLD", "BillingPlan"),
    ("mapping.status", 'paused = "PAUSED"', "PAUSED", "TenantStatus"),
])
@pytest.mark.parametrize("command", ["plan", "run"])
def test_a_mapping_target_that_is_not_a_marketplace_label_is_exit_2_naming_it(dbs, tmp_path, command, table, entry,
                                                                              label, enum):
    config = tmp_path / "reconcile.toml"
    config.write_text(f"[{table}]\n{entry}\n", encoding="utf-8")
    dbs.add_product(("a", "Alpha", "pro", "active"))
    before = market_state(dbs)
    out = run(command, "--config", str(config), env=env_of(dbs), deadline=30)
    assert_config_error_naming(out, label, enum)
    assert_nothing_written(dbs, before)
