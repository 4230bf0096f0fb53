"""SPEC §4 shards: the md5 rule, its sources (flag or Indexed Job env), and N shards == one run."""

from __future__ import annotations

import hashlib

import pytest

from reconcile.shard import Shard
from tests.pgtools import reconcile, run_cli

SAMPLE_IDS = ["ecomlg-001", "kbz-001", "kbz-002", "kbz-003", "kbz-004", "tenant_test_dev", "ünï-çødé", "a b",
              *[f"t-{i:04d}" for i in range(60)]]


def spec_bucket(tenant_id: str, count: int) -> int:
    """SPEC §4 verbatim: int(md5(id).hexdigest()[:8], 16) % N."""
    return int(hashlib.md5(tenant_id.encode()).hexdigest()[:8], 16) % count


def seed(dbs) -> None:
    dbs.add_product(*[(f"t-{i:04d}", f"T{i}", ["dev", "pro", "gold", None][i % 4],
                       ["active", "archived", "trial", "suspended", None][i % 5]) for i in range(80)])
    dbs.add_market(*[(f"t-{i:04d}", f"T{i}" if i % 3 else "Old", "PRO", "ACTIVE") for i in range(0, 80, 2)],
                   *[(f"orphan-{i}", "O", "DEV", "TRIAL") for i in range(7)])


@pytest.mark.parametrize("count", [2, 3, 7])
def test_python_and_sql_shard_rules_both_follow_the_spec_formula(dbs, count):
    dbs.add_product(*[(i, "N", None, None) for i in SAMPLE_IDS])
    for index in range(count):
        shard = Shard(index, count)
        in_sql = {r.id for r in dbs.sql("product", f"SELECT id FROM tenants WHERE {shard.sql_predicate()}")}
        by_spec = {i for i in SAMPLE_IDS if spec_bucket(i, count) == index}
        assert in_sql == by_spec == {i for i in SAMPLE_IDS if shard.contains(i)}


def test_n_shards_one_after_another_do_exactly_what_one_run_does(dbs, more_dbs):
    whole = dbs
    sharded = more_dbs()
    seed(whole)
    seed(sharded)
    one, _ = reconcile(whole, orphans="archive", max_archive=10**6, max_archive_ratio=1.0)
    parts = [reconcile(sharded, orphans="archive", shard=Shard(i, 3), max_archive=10**6,
                       max_archive_ratio=1.0)[0] for i in range(3)]
    strip = {"createdAt", "updatedAt"}
    assert ({k: {f: v for f, v in row.items() if f not in strip} for k, row in whole.market().items()}
            == {k: {f: v for f, v in row.items() if f not in strip} for k, row in sharded.market().items()})
    for key in ("created", "archived", "orphans"):
        assert sorted(x for p in parts for x in p.lists[key]) == sorted(one.lists[key]), key
    assert sorted(u["id"] for p in parts for u in p.lists["updated"]) == sorted(u["id"] for u in one.lists["updated"])
    assert sorted(e["id"] for p in parts for e in p.lists["errors"]) == sorted(e["id"] for e in one.lists["errors"])
    for key, value in one.counts.items():
        assert sum(p.counts[key] for p in parts) == value, key
    assert sum(p.total for p in parts) == one.total
    assert [p.shard for p in parts] == ["0/3", "1/3", "2/3"]
    assert one.counts["created"] and one.counts["updated"] and one.counts["archived"] and one.counts["errors"]


def test_indexed_job_environment_selects_the_same_shard_as_the_flag(dbs):
    seed(dbs)
    by_flag = run_cli("plan", "--shard", "1/3", env=dbs.env())
    by_env = run_cli("plan", env=dbs.env(JOB_COMPLETION_INDEX="1", RECONCILE_SHARD_COUNT="3"))
    assert by_flag.code == by_env.code == 3
    assert by_flag.report["shard"] == by_env.report["shard"] == "1/3"
    for key in ("created", "updated", "orphans", "errors", "counts", "total"):
        assert by_flag.report[key] == by_env.report[key], key
    assert all(spec_bucket(i, 3) == 1 for i in by_flag.report["created"] + by_flag.report["orphans"])


@pytest.mark.parametrize(("args", "env"), [
    (["--shard", "4/4"], {}), (["--shard", "x"], {}), (["--shard", "1/0"], {}),
    ([], {"JOB_COMPLETION_INDEX": "5", "RECONCILE_SHARD_COUNT": "4"}),
    ([], {"JOB_COMPLETION_INDEX": "1"}),
])
def test_invalid_shard_exits_2_with_one_line(dbs, args, env):
    result = run_cli("plan", *args, env=dbs.env(**env))
    assert result.code == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "shard" in result.stderr.lower() or "JOB_COMPLETION_INDEX" in result.stderr


def test_lock_is_per_shard():
    from reconcile.lock import lock_key

    keys = {lock_key(Shard(i, 4)) for i in range(4)} | {lock_key(Shard())}
    assert len(keys) == 5
