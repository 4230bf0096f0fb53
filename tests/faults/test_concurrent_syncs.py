"""Concurrent single-tenant syncs serialize per tenant: with or without the inbound unique
constraints, never a duplicate inbound row, and every sync answers success (one creates the
tenant, the others find it in step). On the module's own server, with room for the connections."""

from __future__ import annotations

import collections
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from reconcile.testing.schema import UNIQUE_CONSTRAINTS
from tests.faults.harness import (
    OwnServer,
    Proc,
    assert_no_secret,
    base_env,
    direct_url,
    outputs,
)
from tests.pgtools import REPO, Databases, wait_until_serving


@pytest.fixture(scope="module")
def roomy_server(own_server: OwnServer) -> OwnServer:
    own_server.set_config(max_connections=300)  # 30 processes, a few connections each
    return own_server


@pytest.fixture()
def own_dbs(roomy_server: OwnServer) -> Iterator[Databases]:
    dbs = roomy_server.pair()
    try:
        yield dbs
    finally:
        roomy_server.drop(dbs)


def env_of(dbs: Databases, **extra: str) -> dict[str, str]:
    return base_env(dbs, direct_url(dbs.product), direct_url(dbs.marketplace), RECONCILE_CONNECT_RETRY="10",
                    RECONCILE_NETWORK_TIMEOUT="30", **extra)


def drop_unique_constraints(dbs: Databases) -> None:
    for table, constraint in UNIQUE_CONSTRAINTS.items():
        dbs.sql("marketplace", f'ALTER TABLE {table} DROP CONSTRAINT "{constraint}"')


def counts_per_tenant(dbs: Databases) -> dict[str, tuple[int, int, int]]:
    """tenant id -> ("Tenant" rows, amazon connections, FR amazon addresses)."""
    rows = dbs.sql("marketplace", """
        SELECT t.id,
               (SELECT count(*) FROM "Tenant" x WHERE x.id = t.id),
               (SELECT count(*) FROM inbound_connections c
                 WHERE c."tenantId" = t.id AND lower(c.marketplace) = 'amazon'),
               (SELECT count(*) FROM inbound_addresses a
                 WHERE a."tenantId" = t.id AND lower(a.marketplace) = 'amazon' AND upper(a.country) = 'FR')
        FROM (SELECT DISTINCT id FROM "Tenant") t""")
    return {r[0]: (int(r[1]), int(r[2]), int(r[3])) for r in rows}


def run_all(args_list: list[tuple[str, ...]], env: dict[str, str], deadline: float) -> list:
    procs = [Proc(*args, env=env) for args in args_list]
    try:
        return [proc.finish(deadline=deadline) for proc in procs]
    finally:
        for proc in procs:
            proc.kill_if_running()


def answered_success(out) -> bool:
    try:
        return out.code == 0 and out.last_json.get("success") is True
    except (AssertionError, ValueError):
        return False


def summary(outs: list) -> str:
    codes = collections.Counter(out.code for out in outs)
    bad = [out for out in outs if not answered_success(out)]
    sample = ""
    if bad:
        lines = [line for line in bad[0].stdout.splitlines() if line.strip()]
        sample = f"; e.g. `{' '.join(bad[0].args)}` -> {lines[-1][:300] if lines else bad[0].stderr[-300:]}"
    return f"exit codes {dict(codes)}, {len(bad)} of {len(outs)} did not answer success{sample}"


def test_thirty_concurrent_syncs_over_eight_new_tenants_all_succeed_without_a_duplicate_inbound_row(own_dbs):
    drop_unique_constraints(own_dbs)
    ids = [f"conc-{i}" for i in range(8)]
    own_dbs.add_product(*[(tenant, f"Concurrent {i}", "pro", "active") for i, tenant in enumerate(ids)])
    started = time.monotonic()
    outs = run_all([("sync", ids[i % len(ids)]) for i in range(30)], env_of(own_dbs), deadline=120)
    assert all(out.code is not None for out in outs), f"a sync did not end within 120s: {summary(outs)}"
    assert time.monotonic() - started < 120
    for out in outs:
        assert_no_secret(*outputs(out))
    problems = []
    if not all(answered_success(out) for out in outs):
        problems.append(summary(outs))
    counts = counts_per_tenant(own_dbs)
    wrong = {tenant: counts.get(tenant) for tenant in ids if counts.get(tenant) != (1, 1, 1)}
    if wrong or set(counts) != set(ids):
        problems.append(f"(Tenant rows, connections, FR addresses) per tenant, expected (1, 1, 1): {wrong}")
    assert not problems, "; ".join(problems)


def test_concurrent_syncs_of_one_brand_new_tenant_all_succeed_and_create_it_once(own_dbs):
    drop_unique_constraints(own_dbs)
    own_dbs.add_product(("brand-new", "Brand New", "starter", "trial"))
    outs = run_all([("sync", "brand-new")] * 10, env_of(own_dbs), deadline=90)
    assert all(out.code is not None for out in outs), f"a sync did not end within 90s: {summary(outs)}"
    problems = [] if all(answered_success(out) for out in outs) else [summary(outs)]
    if counts_per_tenant(own_dbs) != {"brand-new": (1, 1, 1)}:
        problems.append(f"(Tenant rows, connections, FR addresses): {counts_per_tenant(own_dbs)}, expected (1, 1, 1)")
    assert not problems, "; ".join(problems)
    assert all(out.last_json["tenant"] == {"id": "brand-new", "name": "Brand New", "plan": "STARTER",
                                           "status": "TRIAL"} for out in outs)
    assert counts_per_tenant(own_dbs) == {"brand-new": (1, 1, 1)}
    created = [out.report["counts"]["created"] for out in outs]
    assert sorted(created) == [0] * 9 + [1], f"one sync creates it, the others find it in step: {created}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_concurrent_http_syncs_all_answer_200_without_a_duplicate(own_dbs):
    drop_unique_constraints(own_dbs)
    ids = ["web-a", "web-b", "web-c"]
    own_dbs.add_product(*[(tenant, tenant.upper(), "pro", "active") for tenant in ids])
    port = free_port()
    env = env_of(own_dbs, INBOUND_WEBHOOK_KEY="internal-key-for-the-fault-suite")
    proc = subprocess.Popen([sys.executable, "-m", "jobs", "serve", "--port", str(port)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60,
                          headers={"X-Internal-Key": "internal-key-for-the-fault-suite"},
                          limits=httpx.Limits(max_connections=20))
    try:
        wait_until_serving(client, proc, 30)
        answers: list[tuple[int, dict]] = []
        lock = threading.Lock()

        def post(tenant: str) -> None:
            response = client.post("/api/v1/tenants/sync", json={"tenantId": tenant})
            with lock:
                answers.append((response.status_code, response.json()))

        threads = [threading.Thread(target=post, args=(ids[i % len(ids)],)) for i in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert len(answers) == 12, f"{12 - len(answers)} requests got no answer"
    statuses = collections.Counter(code for code, _ in answers)
    bad = [body for code, body in answers if code != 200 or body.get("success") is not True]
    counts = counts_per_tenant(own_dbs)
    problems = [f"statuses {dict(statuses)}; e.g. {bad[0]}"] if bad else []
    if counts != dict.fromkeys(ids, (1, 1, 1)):
        problems.append(f"(Tenant rows, connections, FR addresses) per tenant, expected (1, 1, 1): {counts}")
    assert not problems, "; ".join(problems)
