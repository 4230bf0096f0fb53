"""Saved plans: `plan --out FILE` writes what a dry run planned, `show FILE` renders it, `run --plan
FILE` applies exactly that plan, compare-and-set against the values it read, however the world
changed since; and refusals for another database, another mapping, or a plan too old."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.pgtools import run_cli

PRODUCT = [("keep", "Keep", "pro", "active"), ("drift", "New name", "pro", "active"), ("new", "New", "dev", "trial"),
           ("gone", "Gone", "pro", "archived")]
MARKET = [("keep", "Keep", "PRO", "ACTIVE"), ("drift", "Old name", "PRO", "ACTIVE"), ("gone", "Gone", "PRO", "ACTIVE"),
          ("orphan", "O", "DEV", "ACTIVE")]


@pytest.fixture()
def planned(dbs, tmp_path):
    """The databases and a plan saved for them: create `new`, update `drift`, archive `gone`."""
    dbs.add_product(*PRODUCT)
    dbs.add_market(*MARKET)
    path = tmp_path / "plan.json"
    result = run_cli("plan", "--out", str(path), env=dbs.env())
    assert result.code == 0, result.stderr
    return dbs, path, result


def test_plan_out_saves_every_action_with_the_values_read_and_those_to_write(planned):
    dbs, path, result = planned
    document = json.loads(path.read_text())
    assert document["format"] == "tenant-reconcile plan" and document["version"] == 1
    assert document["run_id"] == result.report["run_id"] and document["created_at"].endswith("Z")
    assert document["product"] == {"db": dbs.product.display, "tenants": 4}
    assert document["marketplace"] == {"db": dbs.marketplace.display, "tenants": 4}
    assert document["shard"] == "0/1" and document["mapping"].startswith("sha256:")
    assert {a["id"]: a["action"] for a in document["actions"]} == {"new": "create", "drift": "update",
                                                                    "gone": "archive"}
    update = next(a for a in document["actions"] if a["action"] == "update")
    assert update["read"] == {"name": "Old name", "plan": "PRO", "status": "ACTIVE"}
    assert update["write"] == {"name": "New name", "plan": "PRO", "status": "ACTIVE"}
    create = next(a for a in document["actions"] if a["action"] == "create")
    assert create["read"] is None
    assert create["write"] == {"slug": "new", "name": "New", "plan": "DEV", "status": "TRIAL"}
    assert document["counts"]["created"] == 1 and document["orphans"] == ["orphan"]
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert result.report["plan_file"]["sha256"] == sha and result.report["plan_file"]["path"] == str(path)
    assert dbs.market()["drift"]["name"] == "Old name"  # a plan writes nothing


def test_show_renders_a_saved_plan_for_people(planned):
    dbs, path, _ = planned
    result = run_cli("show", str(path), env=dbs.env())
    assert result.code == 0
    lines = result.stdout.splitlines()
    assert any(line.startswith("+ create new") and '"New"  DEV/TRIAL' in line for line in lines)
    assert any(line.startswith("~ update drift") and "name Old name -> New name" in line for line in lines)
    assert any(line.startswith("- archive gone") for line in lines)
    assert "Plan: 1 to create, 1 to update, 1 to archive. 1 orphan (reported), 0 row errors, 0 skipped." in lines
    assert dbs.product.display in result.stdout and "{'" not in result.stdout


def test_run_plan_applies_exactly_the_plan_and_nothing_else(planned):
    dbs, path, _ = planned
    dbs.add_product(("later", "Later", "pro", "active"))  # not in the plan: left for a normal run
    result = run_cli("run", "--plan", str(path), env=dbs.env())
    assert result.code == 0, result.stderr
    report = result.report
    assert report["created"] == ["new"] and [u["id"] for u in report["updated"]] == ["drift"]
    assert report["archived"] == ["gone"] and report["plan_file"]["sha256"] == hashlib.sha256(
        path.read_bytes()).hexdigest()
    market = dbs.market()
    assert "later" not in market and market["drift"]["name"] == "New name" and market["gone"]["status"] == "CLOSED"


def test_a_marketplace_row_changed_since_the_plan_is_a_conflict(planned):
    dbs, path, _ = planned
    dbs.sql("marketplace", """UPDATE "Tenant" SET name = 'Someone else' WHERE id = 'drift'""")
    result = run_cli("run", "--plan", str(path), env=dbs.env())
    assert result.code == 3 and result.report["conflicts"] == ["drift"]
    assert dbs.market()["drift"]["name"] == "Someone else"  # compare-and-set: not overwritten
    assert result.report["created"] == ["new"]  # the rest of the plan is applied


def test_a_product_row_changed_since_the_plan_is_a_stale_plan_conflict(planned):
    dbs, path, _ = planned
    dbs.sql("product", "UPDATE tenants SET name = 'Newer name' WHERE id = 'drift'")
    dbs.sql("product", "UPDATE tenants SET status = 'active' WHERE id = 'gone'")
    result = run_cli("run", "--plan", str(path), env=dbs.env())
    assert result.code == 3 and sorted(result.report["conflicts"]) == ["drift", "gone"]
    stale = {e["tenant_id"] for e in result.of("tenant.conflict") if e.get("conflict") == "stale_plan"}
    assert stale == {"drift", "gone"}
    market = dbs.market()
    assert market["drift"]["name"] == "Old name" and market["gone"]["status"] == "ACTIVE"


def test_a_tenant_created_by_someone_else_meanwhile_is_a_conflict(planned):
    dbs, path, _ = planned
    dbs.add_market(("new", "Racer", "DEV", "TRIAL"))
    result = run_cli("run", "--plan", str(path), env=dbs.env())
    assert result.code == 3 and result.report["conflicts"] == ["new"] and result.report["errors"] == []
    assert dbs.market()["new"]["name"] == "Racer"


def test_a_plan_for_other_databases_is_refused(planned, more_dbs):
    _, path, _ = planned
    other = more_dbs()
    result = run_cli("run", "--plan", str(path), env=other.env())
    assert result.code == 2 and "was made for the product database" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


def test_a_plan_made_with_another_mapping_is_refused(planned, tmp_path):
    dbs, path, _ = planned
    config = tmp_path / "mapping.toml"
    config.write_text('[mapping.plan]\nbusiness = "ENTERPRISE"\n')
    result = run_cli("run", "--plan", str(path), "--config", str(config), env=dbs.env())
    assert result.code == 2 and "another mapping" in result.stderr and dbs.market()["drift"]["name"] == "Old name"


def test_a_plan_older_than_the_maximum_age_is_refused(planned):
    dbs, path, _ = planned
    document = json.loads(path.read_text())
    document["created_at"] = "2026-01-01T00:00:00Z"
    path.write_text(json.dumps(document))
    result = run_cli("run", "--plan", str(path), env=dbs.env())
    assert result.code == 2 and "--max-plan-age" in result.stderr
    assert run_cli("run", "--plan", str(path), "--max-plan-age", "3650d", env=dbs.env()).code == 0


def test_the_guard_applies_to_a_saved_plan(dbs, tmp_path):
    dbs.add_product(*[(f"t{i}", "T", "pro", "archived") for i in range(12)])
    dbs.add_market(*[(f"t{i}", "T", "PRO", "ACTIVE") for i in range(12)])
    path = tmp_path / "plan.json"
    assert run_cli("plan", "--out", str(path), env=dbs.env()).code == 5  # saved even though the guard trips
    refused = run_cli("run", "--plan", str(path), env=dbs.env())
    assert refused.code == 5 and refused.report["status"] == "aborted"
    forced = run_cli("run", "--plan", str(path), "--force", env=dbs.env())
    assert forced.code == 0 and len(forced.report["archived"]) == 12


def test_plan_out_to_an_unwritable_place_is_a_config_error(dbs, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_cli("plan", "--out", str(blocker / "plan.json"), env=dbs.env())
    assert result.code == 2 and "--out" in result.stderr


def test_run_plan_with_only_or_dry_run_is_a_usage_error(planned):
    dbs, path, _ = planned
    assert run_cli("run", "--plan", str(path), "--only", "new", env=dbs.env()).code == 2
    assert run_cli("run", "--plan", str(path), "--dry-run", env=dbs.env()).code == 2


def test_a_file_that_is_not_a_plan_is_refused(dbs, tmp_path):
    path = Path(tmp_path / "x.json")
    path.write_text('{"hello": 1}')
    result = run_cli("run", "--plan", str(path), env=dbs.env())
    assert result.code == 2 and "not a saved plan" in result.stderr
    assert run_cli("show", str(path), env=dbs.env()).code == 2


def plan_file(tmp_path: Path, **changes: object) -> Path:
    """A saved plan written by hand (a file can hold anything), with `changes` to its header."""
    document = {"format": "tenant-reconcile plan", "version": 1, "run_id": "r1", "created_at": "2026-11-24T02:00:00Z",
                "product": {"db": "h:5432/p", "tenants": 2}, "marketplace": {"db": "h:5432/m", "tenants": 1},
                "shard": "0/1", "only": None, "mapping": "sha256:" + "0" * 64,
                "counts": {"created": 1, "updated": 1, "archived": 0, "unchanged": 0, "orphans": 0, "errors": 1,
                           "skipped": 0},
                "actions": [{"action": "create", "id": "evil\n+ create fake", "read": None,
                             "write": {"slug": "evil", "name": 'Name\n"quoted"', "plan": "DEV", "status": "TRIAL"}},
                            {"action": "update", "id": "u", "read": {"name": "Old\nname", "plan": "PRO",
                                                                     "status": "ACTIVE"},
                             "write": {"name": "New", "plan": "PRO", "status": "ACTIVE"}}],
                "errors": [{"id": "bad\rid", "error": "invalid_plan", "detail": "plan 'gold'\nhas no mapping"}],
                "orphans": [], "skipped": []}
    document.update(changes)
    for key, value in changes.items():
        if value is None:
            del document[key]
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize(("changes", "problem"), [
    ({"created_at": None}, "created_at is missing"),
    ({"created_at": "yesterday"}, "created_at 'yesterday' is not a time"),
    ({"created_at": 12}, "created_at 12 is not a time"),
    ({"actions": None}, "actions is missing"),
    ({"actions": [{"action": "drop", "id": "x"}]}, "action 1 is not a create, update or archive"),
    ({"product": "h:5432/p"}, "product is not"),
], ids=["no created_at", "bad date", "number", "no actions", "unknown action", "bad product"])
def test_show_of_a_malformed_plan_is_exit_2_with_one_line_naming_the_file_and_the_problem(tmp_path, changes,
                                                                                          problem):
    path = plan_file(tmp_path, **changes)
    result = run_cli("show", str(path))
    assert result.code == 2, (result.code, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and problem in lines[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_show_quotes_ids_and_names_as_the_console_rendering_does(tmp_path):
    from reconcile.report.console import plain, quoted

    result = run_cli("show", str(plan_file(tmp_path)))
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    create = [line for line in lines if line.startswith("+ create")]
    assert len(create) == 1 and plain("evil\n+ create fake") in create[0], lines
    assert quoted('Name\n"quoted"') in create[0]
    assert any(line.startswith("~ update u") and r"name Old\nname -> New" in line for line in lines), lines
    assert any(line.startswith(f"! error {plain('bad' + chr(13) + 'id')}") and r"plan 'gold'\nhas" in line
               for line in lines), lines
    assert "Plan: 1 to create, 1 to update, 0 to archive. 0 orphans, 1 row error, 0 skipped." in lines
    assert len(lines) == len(result.stdout.split("\n")) - 1  # no value broke a line: every line is one of ours


@pytest.mark.parametrize(("changes", "problem"), [
    ({"created_at": None}, "created_at is missing"),
    ({"created_at": "yesterday"}, "created_at 'yesterday' is not a time"),
    ({"product": {"tenants": 2}}, "product.db is missing"),
    ({"actions": [{"action": "create", "id": "x"}]}, "action 1 has no values to write"),
    ({"marketplace": {"db": "h:5432/m"}}, "marketplace.tenants is not a number of tenants"),
    ({"actions": [{"action": "create", "id": "x", "write": {}}]}, "action 1 has no slug, name, plan, status to write"),
    ({"actions": [{"action": "update", "write": {"name": "N", "plan": "PRO", "status": "ACTIVE"}}]},
     "action 1 has no tenant id"),
    ({"errors": [{"id": "x"}]}, "errors holds something that is not a row error"),
], ids=["no created_at", "bad date", "no product db", "no values", "no tenants", "empty write", "no id",
        "partial error"])
def test_run_of_a_malformed_plan_is_exit_2_with_one_line_naming_the_file_and_the_problem(dbs, tmp_path, changes,
                                                                                         problem):
    path = plan_file(tmp_path, **changes)
    result = run_cli("run", "--plan", str(path), env=dbs.env())
    assert result.code == 2, (result.code, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and problem in lines[0], result.stderr
    assert "Traceback" not in result.stderr
