"""`serve`: the seed's endpoints over real HTTP on 127.0.0.1, with and without the internal key."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from reconcile.lock import lock_key
from reconcile.shard import Shard
from tests.pgtools import REPO, run_cli

KEY = "s3cret-internal-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(env: dict[str, str]) -> Iterator[tuple[httpx.Client, subprocess.Popen]]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "jobs", "serve", "--port", str(port)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        yield client, proc
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture()
def api(dbs):
    dbs.add_product(("ecomlg-001", "eComLG", "pro", "active"), ("kbz-003", "K3", "dev", "trial"),
                    ("kbz-001", "K1", "starter", "active"))
    dbs.add_market(("kbz-001", "K1", "STARTER", "ACTIVE"))
    with server(dbs.env(INBOUND_WEBHOOK_KEY=KEY)) as (client, proc):
        client.headers["X-Internal-Key"] = KEY
        yield client, proc, dbs


def test_sync_with_the_key_has_the_seed_response(api):
    client, _, dbs = api
    response = client.post("/api/v1/tenants/sync", json={"tenantId": "ecomlg-001", "createInboundAddress": True,
                                                        "country": "FR"})
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert body["tenant"] == {"id": "ecomlg-001", "name": "eComLG", "plan": "PRO", "status": "ACTIVE"}
    assert body["inboundAddress"].startswith("amazon.ecomlg-001.fr.")
    assert "ecomlg-001" in dbs.market()


def test_without_or_with_a_wrong_key_401_and_nothing_happens(api):
    client, _, dbs = api
    for headers in ({"X-Internal-Key": ""}, {"X-Internal-Key": "wrong"}, {"X-Internal-Key": KEY + "x"}):
        for method, path in (("POST", "/api/v1/tenants/sync"), ("POST", "/api/v1/tenants/sync-all"),
                             ("GET", "/api/v1/tenants/status/kbz-001")):
            response = client.request(method, path, headers=headers, json={"tenantId": "kbz-003"})
            assert response.status_code == 401 and response.json()["success"] is False
    assert set(dbs.market()) == {"kbz-001"}


def test_missing_tenant_id_400_unknown_404_bad_json_400(api):
    client, _, _ = api
    assert client.post("/api/v1/tenants/sync", json={}).status_code == 400
    assert client.post("/api/v1/tenants/sync", json={"tenantId": "  "}).json()["error"] == "tenantId is required"
    assert client.post("/api/v1/tenants/sync", content=b"{not json").status_code == 400
    response = client.post("/api/v1/tenants/sync", json={"tenantId": "ghost"})
    assert response.status_code == 404
    assert response.json() == {"success": False, "error": "Tenant not found in product DB"}
    assert client.post("/api/v1/tenants/sync", json={"tenantId": "kbz-003", "country": "XYZ"}).status_code == 400


def test_sync_all_is_a_real_reconcile_run(api):
    client, _, dbs = api
    response = client.post("/api/v1/tenants/sync-all")
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and body["total"] == 3
    assert body["results"]["created"] == ["ecomlg-001", "kbz-003"]
    assert body["results"]["updated"] == [] and body["results"]["errors"] == []
    assert body["results"]["skipped"] == ["kbz-001"]
    assert set(dbs.market()) == {"ecomlg-001", "kbz-001", "kbz-003"}


def test_status_endpoint(api):
    client, _, _ = api
    body = client.get("/api/v1/tenants/status/kbz-001").json()
    assert body["inSync"] is True and body["product"]["plan"] == "starter" and body["marketplace"]["plan"] == "STARTER"
    assert client.get("/api/v1/tenants/status/nobody").status_code == 404


def test_409_when_a_run_holds_the_lock(api):
    client, _, dbs = api
    with dbs.engine("marketplace").connect() as holder:
        holder.exec_driver_sql("SELECT pg_advisory_lock(%s)", (lock_key(Shard()),))
        assert client.post("/api/v1/tenants/sync", json={"tenantId": "kbz-003"}).status_code == 409
        assert client.post("/api/v1/tenants/sync-all").status_code == 409


def test_errors_are_json_without_stack_traces(api):
    client, _, _ = api
    for response in (client.get("/nope"), client.get("/api/v1/tenants/sync"), client.post("/healthz")):
        assert response.status_code in (404, 405)
        assert response.json()["success"] is False
        assert "Traceback" not in response.text


def test_dev_mode_needs_no_key_and_warns_at_startup(dbs):
    dbs.add_product(("a", "A", "pro", "active"))
    with server(dbs.env(KEYBUZZ_DEV_MODE="true")) as (client, proc):
        assert client.post("/api/v1/tenants/sync", json={"tenantId": "a"}).status_code == 200
    events = [json.loads(line) for line in proc.stdout.read().splitlines() if line.startswith("{")]
    assert any(e["event"] == "http.dev_mode" and e["level"] == "warning" for e in events)


def test_no_key_and_no_dev_mode_refuses_to_start(dbs):
    result = run_cli("serve", "--port", str(free_port()), env=dbs.env())
    assert result.code == 2 and "INBOUND_WEBHOOK_KEY" in result.stderr


def test_key_from_a_file(dbs, tmp_path):
    (tmp_path / "key").write_text(KEY + "\n")
    with server(dbs.env(INBOUND_WEBHOOK_KEY_FILE=str(tmp_path / "key"))) as (client, _):
        assert client.get("/api/v1/tenants/status/x", headers={"X-Internal-Key": KEY}).status_code == 404
        assert client.get("/api/v1/tenants/status/x").status_code == 401


def test_serve_on_a_port_in_use_exits_2_with_one_line_and_never_says_listening():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECONCILE_", "PRODUCT_", "MARKETPLACE_"))}
    env.update({"PRODUCT_DATABASE_URL": "postgresql://u@127.0.0.1:9/product",  # never connected to
                "MARKETPLACE_DATABASE_URL": "postgresql://u@127.0.0.1:9/marketplace",
                "INBOUND_WEBHOOK_KEY": KEY})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--port", str(port), env=env, timeout=30)
    assert result.code == 2, (result.code, result.stdout, result.stderr)
    assert result.stderr.strip().splitlines() == [
        f"tenant-reconcile: configuration error: cannot listen on 127.0.0.1:{port}: address already in use"]
    assert "http.listening" not in result.stdout
    assert all(e["event"] != "http.listening" for e in result.events)  # stdout is still JSON lines only
