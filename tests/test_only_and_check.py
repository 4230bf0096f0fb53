"""`run --only` / `--only-file`: a run restricted to some tenants with every rule of a full run; and
`check`, the read-only preflight, on databases with each kind of problem."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from contextlib import contextmanager

from reconcile.db.lock import lock_key
from reconcile.db.urls import DatabaseUrl
from reconcile.shard import Shard
from tests.pgtools import REPO, run_cli, url_text


def test_only_restricts_the_run_to_the_listed_tenants_with_every_rule(dbs):
    dbs.add_product(("a", "A", "pro", "active"), ("b", "B", "pro", "active"), ("bad", "X", "gold", "active"),
                    ("arch", "R", "pro", "archived"))
    dbs.add_market(("arch", "R", "PRO", "ACTIVE"), ("orphan", "O", "DEV", "ACTIVE"), ("other", "O", "DEV", "ACTIVE"))
    result = run_cli("run", "--only", "a, bad,arch,orphan,missing", "--orphans", "archive", env=dbs.env())
    assert result.code == 3  # the row error of `bad`, as in a full run
    report = result.report
    assert report["created"] == ["a"] and report["total"] == 3
    assert sorted(report["archived"]) == ["arch", "orphan"] and report["orphans"] == ["orphan"]
    assert [e["id"] for e in report["errors"]] == ["bad"]
    market = dbs.market()
    assert "b" not in market and market["other"]["status"] == "ACTIVE"  # not listed: untouched


def test_only_file_takes_one_id_a_line(dbs, tmp_path):
    dbs.add_product(("a", "A", "pro", "active"), ("b", "B", "pro", "active"), ("c", "C", "pro", "active"))
    ids = tmp_path / "ids.txt"
    ids.write_text("a\n\n  c  \n")
    result = run_cli("run", "--only-file", str(ids), env=dbs.env())
    assert result.code == 0 and result.report["created"] == ["a", "c"]
    plan = run_cli("plan", "--only-file", str(ids), env=dbs.env())
    assert plan.code == 0 and plan.report["counts"]["unchanged"] == 2


def test_only_with_a_bad_id_or_both_options_is_a_config_error(dbs, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("a\n" + "x" * 200 + "\n")
    result = run_cli("run", "--only-file", str(ids), env=dbs.env())
    assert result.code == 2 and "id 2 must be at most 128 characters" in result.stderr and result.stdout == ""
    assert run_cli("run", "--only", "a", "--only-file", str(ids), env=dbs.env()).code == 2
    assert run_cli("run", "--only", " , ", env=dbs.env()).code == 2
    assert run_cli("run", "--only-file", str(tmp_path / "none.txt"), env=dbs.env()).code == 2


def test_only_locks_like_sync_beside_another_restricted_run_but_not_beside_a_whole_run(dbs):
    dbs.add_product(("a", "A", "pro", "active"))
    with dbs.engine("marketplace").connect() as holder:
        holder.exec_driver_sql("SELECT pg_advisory_lock_shared(%s)", (lock_key(Shard()),))  # a sync's hold
        assert run_cli("run", "--only", "a", env=dbs.env()).code == 0
        assert run_cli("run", env=dbs.env()).code == 6


def test_only_file_of_100k_ids_runs_in_bounded_memory(dbs, tmp_path):
    dbs.add_product(("tnt-000000007", "A", "pro", "active"))
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"tnt-{i:09d}\n" for i in range(100_000)))
    env = dbs.env()
    script = ("import resource, subprocess, sys; p = subprocess.run([sys.executable, '-m', 'jobs', 'run', "
              f"'--only-file', {str(ids)!r}], capture_output=True, text=True); "
              "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
              "print(p.stdout.splitlines()[-1])")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=REPO,
                         timeout=120)
    first, last = out.stdout.splitlines()[:2]
    code, rss_kb = map(int, first.split())
    assert code == 0, out.stdout + out.stderr
    assert json.loads(last)["created"] == ["tnt-000000007"]
    # The ids' strings, the query text and the interpreter: well under what 100k ids copied around would cost.
    assert rss_kb < 150_000, f"peak RSS {rss_kb / 1024:.0f} MB"


# -- check -------------------------------------------------------------------------------------------

def check(dbs, *args: str, **env: str):
    result = run_cli("check", *args, env=dbs.env(**env))
    reports = [json.loads(line) for line in result.stdout.splitlines() if '"check.report"' in line]
    return result, reports[0] if reports else None


def test_check_of_a_good_pair_passes_and_names_the_sources(dbs):
    result, report = check(dbs)
    assert result.code == 0 and report["status"] == "ok" and report["problems"] == []
    assert report["databases"]["product"]["from"] == "PRODUCT_DATABASE_URL"
    assert report["databases"]["product"]["version"] and "clock_offset_s" in report["databases"]
    names = {c["check"] for c in report["checks"]}
    assert {"product database reachable", "marketplace grants on \"Tenant\"", "run lock",
            "TEMPORARY on the marketplace database", "mapping targets are marketplace enum labels"} <= names


@contextmanager
def weak_writer(dbs):
    """A marketplace role that can read "Tenant" but not write it, nor create temp tables."""
    role = f"rc_weak_{uuid.uuid4().hex[:8]}"
    mdb = dbs.marketplace.url.database
    dbs.sql("marketplace", f"""CREATE ROLE {role} LOGIN; GRANT CONNECT ON DATABASE "{mdb}" TO {role};
        REVOKE TEMPORARY ON DATABASE "{mdb}" FROM PUBLIC; GRANT USAGE ON SCHEMA public TO {role};
        GRANT SELECT ON "Tenant" TO {role};""")
    try:
        yield role
    finally:
        dbs.sql("marketplace", f"""GRANT TEMPORARY ON DATABASE "{mdb}" TO PUBLIC; DROP OWNED BY {role};
                                  DROP ROLE IF EXISTS {role}""")


def test_check_lists_every_missing_grant_and_exits_2(dbs):
    with weak_writer(dbs) as role:
        url = url_text(DatabaseUrl(dbs.marketplace.url.set(username=role)))
        result, report = check(dbs, MARKETPLACE_DATABASE_URL=url)
    assert result.code == 2 and report["status"] == "problems"
    problems = " | ".join(report["problems"])
    assert 'GRANT INSERT, UPDATE ON "Tenant"' in problems and "TEMPORARY" in problems
    assert len([line for line in result.stderr.splitlines() if line.startswith("tenant-reconcile: check:")]) == 2


def test_check_finds_missing_columns_labels_and_inbound_tables(dbs, tmp_path):
    dbs.sql("product", "ALTER TABLE tenants DROP COLUMN updated_at")
    dbs.sql("marketplace", "DROP TABLE inbound_addresses")
    config = tmp_path / "c.toml"
    config.write_text('[mapping.plan]\ngold = "GOLD"\n')
    result, report = check(dbs, "--ensure-inbound", "FR", "--config", str(config))
    assert result.code == 2
    problems = " | ".join(report["problems"])
    assert "missing columns: updated_at" in problems and "inbound_addresses: missing" in problems
    assert "'GOLD' is not a label" in problems


def test_check_of_an_unreachable_database_exits_7(dbs):
    result, report = check(dbs, MARKETPLACE_DATABASE_URL="postgresql://u@127.0.0.1:1/x", RECONCILE_CONNECT_RETRY="0")
    assert result.code == 7 and report["status"] == "unreachable"
    assert report["checks"][0] == {"check": "product database reachable", "ok": True,
                                   "detail": report["checks"][0]["detail"]}


def test_check_names_the_holder_of_the_run_lock_without_failing(dbs):
    with dbs.engine("marketplace").connect() as holder:
        holder.exec_driver_sql("SET application_name = 'the-nightly-run'")
        holder.exec_driver_sql("SELECT pg_advisory_lock(%s)", (lock_key(Shard()),))
        result, report = check(dbs)
    assert result.code == 0
    lock = next(c for c in report["checks"] if c["check"] == "run lock")
    assert lock["ok"] is False and "the-nightly-run" in lock["detail"]


def test_check_renders_a_table_for_people(dbs):
    result = run_cli("check", "--log-format", "console", env=dbs.env())
    assert result.code == 0 and "| product database reachable" in result.stdout and "Check: ok" in result.stdout
    assert "{'" not in result.stdout and os.linesep in result.stdout
