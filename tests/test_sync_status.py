"""`sync` and `status`: keybuzz-backend's single-tenant endpoints as commands, without their defects, and the rule for
the TENANT_ID they are given."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest

from reconcile.db.lock import lock_key
from reconcile.ids import tenant_id_problem
from reconcile.shard import Shard
from tests.pgtools import REPO, run_cli


def last_json(result) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_sync_unknown_tenant_exits_4_with_the_not_found_answer(dbs):
    result = run_cli("sync", "ghost", env=dbs.env())
    assert result.code == 4
    assert result.events == [{"success": False, "error": "Tenant not found in product DB"}]


def test_sync_with_the_product_db_unreachable_reports_and_answers_like_a_failed_run(dbs):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dbs.env(PRODUCT_DATABASE_URL=f"postgresql://u:hunter2@127.0.0.1:{port}/p", RECONCILE_CONNECT_RETRY="0")
    result = run_cli("sync", "kbz-001", env=env)
    assert result.code == 7
    body = last_json(result)
    assert body["success"] is False and "product" in body["error"]
    assert result.report["status"] == "failed" and result.report["source"]["db"] == f"127.0.0.1:{port}/p"
    assert "hunter2" not in result.stdout + result.stderr and "Traceback" not in result.stderr


def test_sync_creates_the_tenant_and_its_fr_address_by_default(dbs):
    dbs.add_product(("ecomlg-001", "eComLG", "pro", "active"), ("other", "O", "dev", "trial"))
    result = run_cli("sync", "ecomlg-001", env=dbs.env())
    assert result.code == 0, result.stderr
    body = last_json(result)
    assert body["success"] is True
    assert body["tenant"] == {"id": "ecomlg-001", "name": "eComLG", "plan": "PRO", "status": "ACTIVE"}
    assert re.fullmatch(r"amazon\.ecomlg-001\.fr\.[a-z0-9]{6}@inbound\.keybuzz\.io", body["inboundAddress"])
    assert set(dbs.market()) == {"ecomlg-001"}  # only that tenant
    assert result.report["created"] == ["ecomlg-001"] and result.report["counts"]["inbound_created"] == 1
    again = last_json(run_cli("sync", "ecomlg-001", env=dbs.env()))
    assert again["inboundAddress"] == body["inboundAddress"]  # never regenerated


def test_sync_updates_drift_and_archives(dbs):
    dbs.add_product(("a", "A2", "enterprise", "suspended"), ("b", "B", "pro", "archived"))
    dbs.add_market(("a", "A", "PRO", "ACTIVE"), ("b", "B", "PRO", "ACTIVE"))
    result = run_cli("sync", "a", "--country", "de", env=dbs.env())
    assert last_json(result)["tenant"] == {"id": "a", "name": "A2", "plan": "ENTERPRISE", "status": "SUSPENDED"}
    assert last_json(result)["inboundAddress"].startswith("amazon.a.de.")
    archived = run_cli("sync", "b", env=dbs.env())
    assert last_json(archived)["tenant"]["status"] == "CLOSED"
    assert last_json(archived)["inboundAddress"] is None  # CLOSED tenants get none


def test_sync_no_inbound(dbs):
    dbs.add_product(("a", "A", "pro", "active"))
    result = run_cli("sync", "a", "--no-inbound", env=dbs.env())
    assert result.code == 0 and last_json(result)["inboundAddress"] is None
    assert dbs.sql("marketplace", "SELECT count(*) AS n FROM inbound_addresses")[0].n == 0


def test_sync_row_error_is_not_success_and_exits_3(dbs):
    dbs.add_product(("a", "A", "gold", "active"))
    result = run_cli("sync", "a", env=dbs.env())
    assert result.code == 3
    body = last_json(result)
    assert body["success"] is False and "invalid_plan" in body["error"] and body["tenant"] is None


def test_sync_bad_country_exit_2(dbs):
    dbs.add_product(("a", "A", "pro", "active"))
    assert run_cli("sync", "a", "--country", "FRA", env=dbs.env()).code == 2


def test_a_sync_that_ends_failed_or_locked_says_why_in_one_stderr_line_like_a_run(dbs, tmp_path):
    dbs.add_product(("a", "A", "gold", "active"), ("b", "B", "pro", "active"))
    config = tmp_path / "c.toml"
    config.write_text('[mapping.plan]\ngold = "GOLD"\n')  # not a label of the marketplace enum
    unlabelled = run_cli("sync", "a", "--config", str(config), env=dbs.env())
    assert unlabelled.code == 2 and unlabelled.report["status"] == "failed"
    assert unlabelled.stderr.splitlines() == [f"tenant-reconcile: configuration error: {unlabelled.report['error']}"]
    assert "'GOLD' is not a label" in unlabelled.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = run_cli("sync", "b", env=dbs.env(MARKETPLACE_DATABASE_URL=f"postgresql://u@127.0.0.1:{port}/m"))
    assert down.code == 7 and last_json(down)["success"] is False
    assert down.stderr.splitlines() == [f"tenant-reconcile: {down.report['error']}"]
    with dbs.engine("marketplace").connect() as holder:
        holder.exec_driver_sql("SELECT pg_advisory_lock(%s)", (lock_key(Shard()),))
        locked = run_cli("sync", "b", env=dbs.env())
    assert locked.code == 6 and locked.stderr.splitlines() == [f"tenant-reconcile: {locked.report['error']}"]
    partial = run_cli("sync", "a", env=dbs.env())  # a row error: partial, said by the answer only (as a run)
    assert partial.code == 3 and partial.stderr == ""


def test_sync_waits_for_no_full_run_but_refuses_beside_one(dbs):
    dbs.add_product(("a", "A", "pro", "active"))
    engine = dbs.engine("marketplace")
    with engine.connect() as holder:
        holder.exec_driver_sql("SELECT pg_advisory_lock(%s)", (lock_key(Shard()),))
        result = run_cli("sync", "a", env=dbs.env())
        assert result.code == 6 and last_json(result)["success"] is False
        holder.exec_driver_sql("SELECT pg_advisory_unlock(%s)", (lock_key(Shard()),))
        holder.exec_driver_sql("SELECT pg_advisory_lock_shared(%s)", (lock_key(Shard()),))  # another sync
        assert run_cli("sync", "a", env=dbs.env()).code == 0
        assert run_cli("run", env=dbs.env()).report["status"] == "locked"  # a run waits for syncs


def test_status_has_the_known_shape_and_values_as_stored(dbs):
    dbs.add_product(("ecomlg-001", "eComLG", "pro", "active"))
    dbs.add_market(("ecomlg-001", "eComLG", "PRO", "ACTIVE"))
    dbs.sql("marketplace", """
        INSERT INTO inbound_connections (id, "tenantId", marketplace, countries, "updatedAt")
        VALUES ('c1', 'ecomlg-001', 'amazon', '["FR"]', now());
        INSERT INTO inbound_addresses (id, "connectionId", "tenantId", marketplace, country, token, "emailAddress",
                                       "updatedAt")
        VALUES ('a1', 'c1', 'ecomlg-001', 'AMAZON', 'FR', 'cp2hat', 'amazon.ecomlg-001.fr.cp2hat@inbound.keybuzz.io',
                now());
        INSERT INTO "MarketplaceConnection" (id, "tenantId", type, status, "displayName", "updatedAt")
        VALUES ('m1', 'ecomlg-001', 'AMAZON', 'CONNECTED', 'Amazon FR', now());""")
    result = run_cli("status", "ecomlg-001", env=dbs.env())
    assert result.code == 0
    assert last_json(result) == {
        "tenantId": "ecomlg-001",
        "product": {"exists": True, "name": "eComLG", "plan": "pro", "status": "active"},
        "marketplace": {"exists": True, "name": "eComLG", "plan": "PRO", "status": "ACTIVE"},
        "inSync": True,
        "inboundAddresses": [{"marketplace": "AMAZON", "country": "FR",
                              "email": "amazon.ecomlg-001.fr.cp2hat@inbound.keybuzz.io", "status": "PENDING"}],
        "marketplaceConnections": [{"type": "AMAZON", "status": "CONNECTED", "displayName": "Amazon FR"}],
        "differences": [],
    }
    assert dbs.market()["ecomlg-001"]["updatedAt"].year == 2020  # read-only


@pytest.mark.parametrize(("product", "market", "differences"), [
    (("a", "A", "pro", "active"), ("a", "A", "DEV", "ACTIVE"), [{"field": "plan", "product": "PRO",
                                                                 "marketplace": "DEV"}]),
    (("a", "New", None, None), ("a", "A", "DEV", "TRIAL"), [{"field": "name", "product": "New", "marketplace": "A"},
                                                           {"field": "status", "product": "ACTIVE",
                                                            "marketplace": "TRIAL"}]),
    (("a", "A", "pro", "archived"), ("a", "A", "PRO", "ACTIVE"), [{"field": "status", "product": "CLOSED",
                                                                   "marketplace": "ACTIVE"}]),
    (("a", "A", "gold", "active"), ("a", "A", "PRO", "ACTIVE"), [{"field": "plan", "product": "gold",
                                                                  "marketplace": "PRO", "error": "invalid_plan"}]),
    (("a", "A", "pro", "active"), None, [{"field": "exists", "product": True, "marketplace": False}]),
])
def test_in_sync_only_when_both_exist_and_nothing_differs(dbs, product, market, differences):
    dbs.add_product(product)
    if market:
        dbs.add_market(market)
    body = last_json(run_cli("status", "a", env=dbs.env()))
    assert body["inSync"] is False and body["differences"] == differences


def test_archived_and_closed_is_in_sync(dbs):
    dbs.add_product(("a", "A", "pro", "archived"))
    dbs.add_market(("a", "Other", "DEV", "CLOSED"))
    assert last_json(run_cli("status", "a", env=dbs.env()))["inSync"] is True


def test_status_of_an_orphan_and_of_nothing(dbs):
    dbs.add_market(("z", "Z", "PRO", "ACTIVE"))
    orphan = run_cli("status", "z", env=dbs.env())
    assert orphan.code == 0 and last_json(orphan)["product"]["exists"] is False
    nothing = run_cli("status", "nobody", env=dbs.env())
    assert nothing.code == 4 and last_json(nothing)["inSync"] is False


# -- the TENANT_ID argument ----------------------------------------------------------------------

def test_tenant_id_rule():
    assert tenant_id_problem("kbz-003") is None
    assert tenant_id_problem("k" * 128) is None
    assert tenant_id_problem(" kbz-003 ") is None  # ids are compared exactly: kept as given, not trimmed
    assert tenant_id_problem("é" * 128) is None  # characters, not bytes
    assert tenant_id_problem("k" * 129) == "tenantId must be at most 128 characters"
    assert tenant_id_problem("a\x00b") == "tenantId must not contain a NUL character"
    assert tenant_id_problem("a\ud800") == "tenantId must be valid UTF-8 text"
    assert tenant_id_problem(os.fsdecode(b"a\xff")) == "tenantId must be valid UTF-8 text"
    for blank in ("", "  ", "\t\n", None):
        assert tenant_id_problem(blank) == "tenantId is required"
    for wrong in (3, 3.5, True, ["a"], {"a": 1}, b"a"):
        assert tenant_id_problem(wrong) == "tenantId must be a string"
    assert tenant_id_problem("k" * 129, name="TENANT_ID") == "TENANT_ID must be at most 128 characters"


def run_with_bytes(*args: bytes, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The CLI with argv given as raw bytes, as a shell passes a file name in another encoding."""
    return subprocess.run([os.fsencode(sys.executable), b"-m", b"jobs", *args], capture_output=True, env=env,
                          cwd=REPO, timeout=60)


def written(dbs) -> tuple[int, int, int]:
    row = dbs.sql("marketplace", 'SELECT (SELECT count(*) FROM "Tenant") AS tenants, '
                                 "(SELECT count(*) FROM inbound_connections) AS connections, "
                                 "(SELECT count(*) FROM inbound_addresses) AS addresses")[0]
    return row.tenants, row.connections, row.addresses


@pytest.mark.parametrize("command", [b"sync", b"status"])
@pytest.mark.parametrize(("tenant_id", "message"), [
    (b"\xff", "TENANT_ID must be valid UTF-8 text"),
    (b"kbz-003\xed\xa0\x80", "TENANT_ID must be valid UTF-8 text"),  # a surrogate, UTF-8 encoded
    (b"k" * 129, "TENANT_ID must be at most 128 characters"),
    (b"  ", "TENANT_ID is required"),
    (b"", "TENANT_ID is required"),
], ids=["invalid-utf8", "surrogate", "129-characters", "blank", "empty"])
def test_a_tenant_id_argument_that_cannot_be_an_id_exits_2_with_one_line(dbs, command, tenant_id, message):
    dbs.add_product(("k" * 129, "Long", "pro", "active"), (" kbz-003", "K", "pro", "active"))
    result = run_with_bytes(command, tenant_id, env=dbs.env())
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stderr.decode().splitlines() == [f"tenant-reconcile: configuration error: {message}"]
    assert result.stdout == b""
    assert written(dbs) == (0, 0, 0)


def test_a_tenant_id_argument_is_checked_before_any_database_is_needed():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECONCILE_", "PRODUCT_", "MARKETPLACE_"))}
    env.update({"PRODUCT_DATABASE_URL": "postgresql://u:hunter2@127.0.0.1:9/product",  # never connected to
                "MARKETPLACE_DATABASE_URL": "postgresql://u:hunter2@127.0.0.1:9/marketplace"})
    for command in ("sync", "status"):
        result = run_cli(command, "k" * 200, env=env, timeout=30)
        assert result.code == 2 and result.stdout == ""
        assert result.stderr == "tenant-reconcile: configuration error: TENANT_ID must be at most 128 characters\n"
