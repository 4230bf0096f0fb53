"""Shards: the md5 rule, where the shard comes from (flag or Indexed Job env), and that N
shards together do exactly what one whole run does."""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
from typing import Any

import pytest

from reconcile.mapping import Mapping
from reconcile.shard import MAX_SHARDS, Shard
from tests.pgtools import REPO, CliResult, reconcile, run_cli

INITIAL = "2020-01-01 00:00:00"
UNGUARDED = {"max_archive": 10**6, "max_archive_ratio": 1.0}


def spec_bucket(tenant_id: str, count: int) -> int:
    """The documented rule verbatim: int(md5(id).hexdigest()[:8], 16) % N."""
    return int(hashlib.md5(tenant_id.encode()).hexdigest()[:8], 16) % count


def sample_ids() -> list[str]:
    rng = random.Random(4)
    alphabet = "abcXYZ019-_ .éüß東京🙂'\\\t"
    ids = ["ecomlg-001", "kbz-001", "kbz-002", "kbz-003", "kbz-004", "tenant_test_dev", "ünï-çødé", "a b", "x" * 128]
    ids += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 24))) for _ in range(300)]
    return sorted(set(ids))


def dataset(seed: int = 7, tenants: int = 240) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Product rows and marketplace rows covering every action: create, update (each field),
    archive, archived-and-closed, unchanged, row errors, a slug held by another tenant, orphans
    open and CLOSED. No two product ids share a slug (twin slugs have their own test below)."""
    rng = random.Random(seed)
    mapping = Mapping()
    plans = ["dev", "starter", "pro", "enterprise", None, "", " Pro", "gold"]
    statuses = ["active", "trial", "suspended", "closed", None, "archived", "Archived ", "weird"]
    product: list[tuple[Any, ...]] = []
    market: list[tuple[Any, ...]] = []
    for i in range(tenants):
        tenant_id = rng.choice(["t-", "t_", "Tn-", "ü-", "kbz-"]) + f"{i:04d}"
        name = rng.choice(["Acme", "Société Générale", "Tab\there", f"T{i}", "  "])
        row = (tenant_id, name, rng.choice(plans), rng.choice(statuses))
        product.append(row)
        norm = mapping.normalize(*row)
        fate = rng.random()
        if fate < 0.25:
            continue  # absent: a create (or nothing when archived, or an error)
        plan = norm.plan if not norm.error else "DEV"
        status = "CLOSED" if norm.archived or norm.error else norm.status
        if fate < 0.45:
            market.append((tenant_id, name + " old", plan, status))
        elif fate < 0.55:
            market.append((tenant_id, name, "ENTERPRISE" if plan != "ENTERPRISE" else "DEV", status))
        elif fate < 0.65:
            market.append((tenant_id, name, plan, "SUSPENDED" if status != "SUSPENDED" else "TRIAL"))
        else:
            market.append((tenant_id, name, plan, status))
    # A create whose slug an unrelated marketplace tenant already holds: slug_conflict in any shard.
    product.append(("held_slug", "Held", "pro", "active"))
    market.append(("legacy-held", "Legacy", "PRO", "ACTIVE", "held-slug"))
    market += [(f"orphan-{i}", f"O{i}", "DEV", rng.choice(["ACTIVE", "CLOSED", "TRIAL"])) for i in range(15)]
    return product, market


def seed_data(dbs, seed: int = 7) -> None:
    product, market = dataset(seed)
    dbs.add_product(*product)
    dbs.add_market(*market, updated_at=INITIAL)


def final_state(dbs) -> tuple[dict[str, tuple[Any, ...]], set[str]]:
    """The marketplace table without timestamps, and the ids a run wrote (updatedAt moved)."""
    rows = dbs.market()
    table = {k: (r["slug"], r["name"], r["plan"], r["status"]) for k, r in rows.items()}
    touched = {k for k, r in rows.items() if str(r["updatedAt"]) != INITIAL}
    return table, touched


def ids_of(report: Any, key: str) -> list[str]:
    return sorted(x["id"] if isinstance(x, dict) else x for x in report.lists[key])


@pytest.mark.parametrize("count", [2, 3, 7, 1000, MAX_SHARDS])
def test_python_and_sql_shard_rules_both_follow_the_spec_formula(dbs, count):
    ids = sample_ids()
    # Ids hashing to >= 0x80000000 catch a signed conversion in SQL; make sure there are some.
    assert any(int(hashlib.md5(i.encode()).hexdigest()[0], 16) >= 8 for i in ids)
    dbs.add_product(*[(i, "N", None, None) for i in ids])
    buckets = {spec_bucket(i, count) for i in ids}
    indexes = range(count) if count <= 10 else sorted(buckets | {0, count - 1})
    # Every shard's predicate in one statement: (index, id) for each id the predicate selects.
    union = " UNION ALL ".join(f"SELECT {i} AS shard, id FROM tenants WHERE {Shard(i, count).sql_predicate()}"
                               for i in indexes)
    in_sql = {(r.shard, r.id) for r in dbs.sql("product", union)}
    by_spec = {(spec_bucket(i, count), i) for i in ids if spec_bucket(i, count) in indexes}
    by_python = {(index, i) for index in indexes for i in ids if Shard(index, count).contains(i)}
    assert in_sql == by_spec == by_python


@pytest.mark.parametrize(("count", "orphans"), [(3, "report"), (4, "archive")])
def test_n_shards_one_after_another_do_exactly_what_one_run_does(dbs, more_dbs, count, orphans):
    whole, sharded = dbs, more_dbs()
    seed_data(whole)
    seed_data(sharded)
    one, _ = reconcile(whole, orphans=orphans, **UNGUARDED)
    parts = [reconcile(sharded, orphans=orphans, shard=Shard(i, count), **UNGUARDED)[0] for i in range(count)]

    assert final_state(sharded) == final_state(whole)
    for key in ("created", "updated", "archived", "orphans", "errors", "conflicts"):
        assert sorted(x for p in parts for x in ids_of(p, key)) == ids_of(one, key), key
    for key, value in one.counts.items():
        assert sum(p.counts[key] for p in parts) == value, key
    assert sum(p.total for p in parts) == one.total
    assert [p.shard for p in parts] == [f"{i}/{count}" for i in range(count)]
    for i, part in enumerate(parts):
        mine = ids_of(part, "created") + ids_of(part, "updated") + ids_of(part, "orphans") + ids_of(part, "errors")
        assert all(spec_bucket(x, count) == i for x in mine)
    # The data exercises every kind of action, so the equalities above are not vacuous.
    c = one.counts
    assert c["created"] and c["updated"] and c["archived"] and c["unchanged"] and c["orphans"] and c["errors"]
    assert "slug_conflict" in {e["error"] for e in one.lists["errors"]}


def test_shards_of_an_indexed_job_running_at_once_equal_one_run(dbs, more_dbs):
    """What a Kubernetes Indexed Job does: N `run` processes at the same time, each told its shard
    by JOB_COMPLETION_INDEX + RECONCILE_SHARD_COUNT. Locks are per shard, so none waits."""
    whole, sharded = dbs, more_dbs()
    seed_data(whole, seed=11)
    seed_data(sharded, seed=11)
    one, _ = reconcile(whole, **UNGUARDED)
    procs = [subprocess.Popen([sys.executable, "-m", "jobs", "run", "--max-archive", str(10**6)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                              env=sharded.env(JOB_COMPLETION_INDEX=str(i), RECONCILE_SHARD_COUNT="3",
                                              RECONCILE_MAX_ARCHIVE_RATIO="1"))
             for i in range(3)]
    outputs = [p.communicate(timeout=120) for p in procs]
    results = [CliResult(p.returncode, out, err) for p, (out, err) in zip(procs, outputs, strict=True)]
    for r in results:  # 3: the data has row errors, so a shard holding one ends partial
        assert r.code == {"success": 0, "partial": 3}[r.report["status"]], r.stderr
    assert sorted(r.report["shard"] for r in results) == ["0/3", "1/3", "2/3"]
    assert final_state(sharded) == final_state(whole)
    for key in ("created", "archived", "orphans"):
        assert sorted(x for r in results for x in r.report[key]) == ids_of(one, key), key
    for key, value in one.counts.items():
        assert sum(r.report["counts"][key] for r in results) == value, key


def test_twin_slugs_in_different_shards_resolve_like_one_run(dbs, more_dbs):
    twins = ("tw-1", "tw_1")
    count = next(n for n in range(2, 50) if spec_bucket(twins[0], n) != spec_bucket(twins[1], n))
    whole, sharded = dbs, more_dbs()
    for d in (whole, sharded):
        d.add_product((twins[0], "A", "dev", "active"), (twins[1], "B", "dev", "active"))
    reconcile(whole)
    # The shard holding the larger id first: what an Indexed Job may well do.
    order = sorted(range(count), key=lambda i: i != spec_bucket(twins[1], count))
    for i in order:
        reconcile(sharded, shard=Shard(i, count))
    assert final_state(sharded) == final_state(whole)
    assert set(sharded.market()) == {"tw-1"}  # '-' < '_': the smallest id keeps the slug


def test_indexed_job_environment_selects_the_same_shard_as_the_flag(dbs):
    seed_data(dbs)
    by_flag = run_cli("plan", "--shard", "1/3", "--max-archive", "1000000", env=dbs.env())
    by_env = run_cli("plan", "--max-archive", "1000000",
                     env=dbs.env(JOB_COMPLETION_INDEX="1", RECONCILE_SHARD_COUNT="3"))
    assert by_flag.code == by_env.code == 3, by_flag.stderr + by_env.stderr
    assert by_flag.report["shard"] == by_env.report["shard"] == "1/3"
    for key in ("created", "updated", "archived", "orphans", "errors", "counts", "total"):
        assert by_flag.report[key] == by_env.report[key], key
    assert by_flag.report["created"] and by_flag.report["orphans"]
    assert all(spec_bucket(i, 3) == 1 for i in by_flag.report["created"] + by_flag.report["orphans"])


def test_the_flag_wins_over_the_environment_and_the_default_is_the_whole(dbs):
    dbs.add_product(("kbz-001", "K", "dev", "active"))
    flag = run_cli("plan", "--shard", "2/3", env=dbs.env(JOB_COMPLETION_INDEX="1", RECONCILE_SHARD_COUNT="3"))
    assert flag.code == 0 and flag.report["shard"] == "2/3"
    default = run_cli("plan", env=dbs.env())
    assert default.code == 0 and default.report["shard"] == "0/1" and default.report["total"] == 1
    single = run_cli("plan", env=dbs.env(RECONCILE_SHARD_COUNT="1"))
    assert single.code == 0 and single.report["shard"] == "0/1"


@pytest.mark.parametrize(("args", "env"), [
    (["--shard", "4/4"], {}), (["--shard", "x"], {}), (["--shard", "1/0"], {}), (["--shard", "-1/3"], {}),
    (["--shard", "1/3/5"], {}), (["--shard", f"0/{MAX_SHARDS + 1}"], {}),
    ([], {"JOB_COMPLETION_INDEX": "5", "RECONCILE_SHARD_COUNT": "4"}),
    ([], {"JOB_COMPLETION_INDEX": "1"}),
    ([], {"JOB_COMPLETION_INDEX": "x", "RECONCILE_SHARD_COUNT": "4"}),
    ([], {"JOB_COMPLETION_INDEX": "0", "RECONCILE_SHARD_COUNT": "four"}),
])
def test_invalid_shard_exits_2_with_one_line_and_writes_nothing(dbs, args, env):
    dbs.add_product(("kbz-001", "K", "dev", "active"))
    result = run_cli("run", *args, env=dbs.env(**env))
    assert result.code == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "shard" in result.stderr.lower() or "JOB_COMPLETION_INDEX" in result.stderr
    assert "Traceback" not in result.stderr
    assert dbs.market() == {}


def test_lock_is_per_shard():
    from reconcile.db.lock import lock_key

    keys = {lock_key(Shard(i, 4)) for i in range(4)} | {lock_key(Shard())}
    assert len(keys) == 5


def test_a_twin_already_in_the_marketplace_under_another_slug_does_not_block(dbs):
    twins = ("tw-1", "tw_1")
    count = next(n for n in range(2, 50) if spec_bucket(twins[0], n) != spec_bucket(twins[1], n))
    dbs.add_product((twins[0], "A", "dev", "active"), (twins[1], "B", "dev", "active"))
    dbs.add_market((twins[0], "A", "DEV", "ACTIVE", "renamed-slug"))
    for i in range(count):
        reconcile(dbs, shard=Shard(i, count))
    assert dbs.market()["tw_1"]["slug"] == "tw-1"
