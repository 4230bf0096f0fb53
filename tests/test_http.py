"""`serve`: keybuzz-backend's tenant endpoints over real HTTP on 127.0.0.1, with and without the internal key."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from reconcile.db.lock import lock_key
from reconcile.shard import Shard
from tests.pgtools import REPO, run_cli, wait_until_serving

KEY = "s3cret-internal-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """A running `serve` process whose stdout goes to a file (a pipe nobody reads would fill up
    and stall a server that lives for a whole module)."""

    def __init__(self, proc: subprocess.Popen, out: Path, err: Path) -> None:
        self.proc = proc
        self.out = out
        self.err = err

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout().splitlines() if line.startswith("{")]


@contextmanager
def server(env: dict[str, str]) -> Iterator[tuple[httpx.Client, Served]]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="serve-") as tmp:
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        with out.open("w") as stdout, err.open("w") as stderr:
            proc = subprocess.Popen([sys.executable, "-m", "jobs", "serve", "--port", str(port)], env=env,
                                    cwd=REPO, stdout=stdout, stderr=stderr, text=True)
        served = Served(proc, out, err)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        try:
            wait_until_serving(client, proc, 20, served.stderr)
            yield client, served
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


def test_sync_with_the_key_answers_like_keybuzz_backend(api):
    client, _, dbs = api
    response = client.post("/api/v1/tenants/sync", json={"tenantId": "ecomlg-001", "createInboundAddress": True,
                                                        "country": "FR"})
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert body["tenant"] == {"id": "ecomlg-001", "name": "eComLG", "plan": "PRO", "status": "ACTIVE"}
    assert body["inboundAddress"].startswith("amazon.ecomlg-001.fr.")
    assert "ecomlg-001" in dbs.market()


def test_the_reports_of_http_runs_say_they_came_over_http(api):
    client, served, _ = api
    assert client.post("/api/v1/tenants/sync", json={"tenantId": "kbz-003"}).status_code == 200
    assert client.post("/api/v1/tenants/sync-all").status_code == 200
    reports = [e for e in served.events() if e.get("event") == "reconcile.report"]
    assert [r["trigger"] for r in reports] == ["http", "http"]


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
    with server(dbs.env(KEYBUZZ_DEV_MODE="true")) as (client, served):
        assert client.post("/api/v1/tenants/sync", json={"tenantId": "a"}).status_code == 200
        events = served.events()
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


# -- hostile input -------------------------------------------------------------------------------
# One server and one pair of databases for the whole module: every request below is rejected (or
# looks up a tenant that does not exist), so nothing is ever written, and each test checks that.
# The product holds kbz-003, absent from the marketplace: a request that slipped through would
# create it, which is what "nothing written" catches.

SYNC = "/api/v1/tenants/sync"
STATUS = "/api/v1/tenants/status/"
LIMIT = 64 * 1024


class Hostile:
    def __init__(self, client: httpx.Client, served: Served, dbs) -> None:
        self.client = client
        self.served = served
        self.dbs = dbs
        self.port = client.base_url.port

    def written(self) -> dict[str, int]:
        row = self.dbs.sql("marketplace", 'SELECT (SELECT count(*) FROM "Tenant") AS tenants, '
                                          "(SELECT count(*) FROM inbound_connections) AS connections, "
                                          "(SELECT count(*) FROM inbound_addresses) AS addresses")[0]
        return dict(row._mapping)

    def rejected(self, response: httpx.Response, status: int) -> str:
        """Assert the answer is `status` with the JSON error shape and that nothing was written;
        returns the error message."""
        assert response.status_code == status, (response.status_code, response.text)
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert set(body) == {"success", "error"} and body["success"] is False, body
        assert isinstance(body["error"], str) and body["error"]
        assert self.written() == {"tenants": 0, "connections": 0, "addresses": 0}
        return body["error"]

    def raw(self, request: bytes, *, close: bool = False, timeout: float = 5) -> tuple[int, dict]:
        """Send `request` byte for byte and read one answer (status, JSON body) without waiting for
        the connection to close; a server still waiting for the body times out here."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(request)
            if close:
                sock.shutdown(socket.SHUT_WR)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                assert chunk, f"connection closed before an answer: {data!r}"
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
            length = int(headers["content-length"])
            while len(body) < length:
                chunk = sock.recv(65536)
                assert chunk, "connection closed mid-answer"
                body += chunk
        assert headers["content-type"] == "application/json"
        return int(lines[0].split()[1]), json.loads(body)


@pytest.fixture(scope="module")
def hostile(pg_server) -> Iterator[Hostile]:
    from tests.conftest import _fresh_pair

    with _fresh_pair(pg_server) as dbs:
        dbs.add_product(("kbz-003", "K3", "dev", "trial"))
        with server(dbs.env(INBOUND_WEBHOOK_KEY=KEY)) as (client, served):
            client.headers["X-Internal-Key"] = KEY
            yield Hostile(client, served, dbs)


def padded(size: int, tenant_id: str = "kbz-003") -> bytes:
    """A valid JSON body of exactly `size` bytes for `tenant_id`."""
    head = f'{{"tenantId": "{tenant_id}", "createInboundAddress": false, "pad": "'.encode()
    body = head + b"x" * (size - len(head) - 2) + b'"}'
    assert len(body) == size
    return body


def test_a_body_over_64_kib_is_413_and_nothing_is_written(hostile):
    for size in (LIMIT + 1, 1024 * 1024):
        response = hostile.client.post(SYNC, content=padded(size), headers={"Content-Type": "application/json"})
        assert "64 KiB" in hostile.rejected(response, 413)


def test_limits_are_inclusive_a_64_kib_body_and_a_128_character_id_are_read(hostile):
    for body in (padded(LIMIT, "ghost"), padded(200, "g" * 128),
                 b'\xef\xbb\xbf{"tenantId": "ghost"}',  # a UTF-8 byte order mark may precede JSON
                 b'{"tenantId": "ghost", "createInboundAddress": false, "extra": [1, {"a": null}], "tenantID": 5}'):
        response = hostile.client.post(SYNC, content=body)
        assert hostile.rejected(response, 404) == "Tenant not found in product DB"
    assert hostile.client.get(STATUS + "g" * 128).status_code == 404  # the status JSON: in neither database


def test_a_content_length_over_64_kib_is_413_before_the_body_is_sent(hostile):
    status, body = hostile.raw(b"POST /api/v1/tenants/sync HTTP/1.1\r\nHost: test\r\n"
                               b"X-Internal-Key: " + KEY.encode() + b"\r\nContent-Type: application/json\r\n"
                               b"Content-Length: 10000000\r\n\r\n{")
    assert status == 413 and body["success"] is False and "64 KiB" in body["error"]
    assert hostile.written() == {"tenants": 0, "connections": 0, "addresses": 0}


def test_a_chunked_body_is_cut_off_at_64_kib_while_it_is_still_arriving(hostile):
    chunk = b" " * 0x4000
    status, body = hostile.raw(b"POST /api/v1/tenants/sync HTTP/1.1\r\nHost: test\r\n"
                               b"X-Internal-Key: " + KEY.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
                               + (b"4000\r\n" + chunk + b"\r\n") * 5)  # 80 KiB and no last chunk: never ends
    assert status == 413 and body["success"] is False and "64 KiB" in body["error"]
    assert hostile.written() == {"tenants": 0, "connections": 0, "addresses": 0}


def test_a_complete_chunked_body_over_64_kib_is_413(hostile):
    body = padded(LIMIT + 1000)
    response = hostile.client.post(SYNC, content=iter([body[:40000], body[40000:]]))  # no Content-Length
    assert response.request.headers["transfer-encoding"] == "chunked"
    hostile.rejected(response, 413)


@pytest.mark.parametrize(("body", "message"), [
    (b'{"tenantId": "kbz-003\\u0000"}', "tenantId must not contain a NUL character"),
    (b'{"tenantId": "\\u0000"}', "tenantId must not contain a NUL character"),
    (b'{"tenantId": "kbz-003\\ud800"}', "lone surrogate"),
    (b'{"tenantId": "\\udc00kbz-003"}', "lone surrogate"),
    (b'{"tenantId": "' + b"k" * 129 + b'"}', "tenantId must be at most 128 characters"),
], ids=["nul", "only-nul", "high-surrogate", "low-surrogate", "129-characters"])
def test_a_tenant_id_with_a_nul_a_lone_surrogate_or_over_128_characters_is_400(hostile, body, message):
    error = hostile.rejected(hostile.client.post(SYNC, content=body), 400)
    assert message in error
    assert "kkkkkkkk" not in error  # the value is never echoed


@pytest.mark.parametrize("value", [3, 3.5, True, ["kbz-003"], {"id": "kbz-003"}])
def test_tenant_id_must_be_a_json_string(hostile, value):
    response = hostile.client.post(SYNC, json={"tenantId": value})
    assert hostile.rejected(response, 400) == "tenantId must be a string"


def test_tenant_id_is_required(hostile):
    for body in ({}, {"tenantId": None}, {"tenantId": ""}, {"tenantId": " \t"}):
        assert hostile.rejected(hostile.client.post(SYNC, json=body), 400) == "tenantId is required"
    assert hostile.rejected(hostile.client.post(SYNC, content=b""), 400) == "tenantId is required"


def test_deeply_nested_json_is_400_or_413_never_500(hostile):
    for body in (b"[" * 60000, b'{"tenantId": "kbz-003", "x": ' + b"[" * 60000, b"[" * 1100 + b"]" * 1100):
        assert "nested" in hostile.rejected(hostile.client.post(SYNC, content=body), 400)
    hostile.rejected(hostile.client.post(SYNC, content=b"[" * 100000), 413)  # over the size limit first


@pytest.mark.parametrize("value", ["false", "true", 0, 1, None, [], {}])
def test_create_inbound_address_must_be_a_json_boolean(hostile, value):
    response = hostile.client.post(SYNC, json={"tenantId": "kbz-003", "createInboundAddress": value})
    assert hostile.rejected(response, 400) == "createInboundAddress must be true or false"


@pytest.mark.parametrize("value", [False, 0, 12, [], {}, ["FR"], None])
def test_country_must_be_a_json_string(hostile, value):
    response = hostile.client.post(SYNC, json={"tenantId": "kbz-003", "country": value})
    assert hostile.rejected(response, 400) == "country must be a string"
    # also when no address is asked for: a wrong type is a wrong request either way
    response = hostile.client.post(SYNC, json={"tenantId": "kbz-003", "country": value,
                                               "createInboundAddress": False})
    assert hostile.rejected(response, 400) == "country must be a string"


def test_a_bad_country_is_400_and_never_echoed(hostile):
    for country in ("Q" * 1000, "FRA", "F\x00", "FR,DE"):
        response = hostile.client.post(SYNC, json={"tenantId": "kbz-003", "country": country})
        error = hostile.rejected(response, 400)
        assert error == "country must be one two-letter country code (e.g. FR)"


@pytest.mark.parametrize("body", [
    b'{"tenantId": "\xff"}',  # invalid UTF-8
    '{"tenantId": "kbz-003", "createInboundAddress": false}'.encode("utf-16"),  # JSON is UTF-8
    b'{"tenantId": "kbz-003", "createInboundAddress": false, "n": 1e999}',  # a number too big for a double
    b'{"tenantId": "kbz-003", "n": 1' + b"0" * 5000 + b"}",  # more digits than Python converts
    b'{"tenantId": "kbz-003", "createInboundAddress": false, "n": NaN}',  # not JSON
    b'{"tenantId": "kbz-003"} trailing',
    b'{not json',
], ids=["invalid-utf8", "utf16", "1e999", "5000-digits", "nan", "trailing", "garbage"])
def test_a_body_that_is_not_utf8_json_is_400_never_500(hostile, body):
    assert hostile.rejected(hostile.client.post(SYNC, content=body), 400).startswith("request body")


@pytest.mark.parametrize("body", [b'["kbz-003"]', b'"kbz-003"', b"null", b"1"])
def test_a_body_that_is_not_a_json_object_is_400(hostile, body):
    assert hostile.rejected(hostile.client.post(SYNC, content=body), 400) == "request body must be a JSON object"


@pytest.mark.parametrize(("path", "message"), [
    ("%00", "tenantId must not contain a NUL character"),
    ("kbz%00-003", "tenantId must not contain a NUL character"),
    ("%FF", "tenantId must be valid UTF-8 text"),
    ("kbz-003%ED%A0%80", "tenantId must be valid UTF-8 text"),  # a surrogate, UTF-8 encoded
    ("k" * 129, "tenantId must be at most 128 characters"),
    ("%20%20", "tenantId is required"),
    ("", "tenantId is required"),
], ids=["nul", "inner-nul", "invalid-utf8", "surrogate", "129-characters", "blank", "empty"])
def test_status_rejects_an_id_with_a_nul_bad_utf8_or_over_128_characters(hostile, path, message):
    assert hostile.rejected(hostile.client.get(STATUS + path), 400) == message


def test_a_client_that_disconnects_mid_body_is_not_an_internal_error(hostile):
    before = len(hostile.served.events())
    with socket.create_connection(("127.0.0.1", hostile.port), timeout=5) as sock:
        sock.sendall(b"POST /api/v1/tenants/sync HTTP/1.1\r\nHost: test\r\nX-Internal-Key: " + KEY.encode()
                     + b"\r\nContent-Length: 100\r\n\r\n" + b'{"tenantId": ')
    deadline = time.monotonic() + 10
    while not [e for e in hostile.served.events()[before:] if e["event"] == "http.request"]:
        assert time.monotonic() < deadline, "the server never finished the request"
        time.sleep(0.05)
    events = hostile.served.events()[before:]
    assert not [e for e in events if e["event"] == "http.internal_error"], events
    assert [e["status"] for e in events if e["event"] == "http.request"] == [400]
    assert hostile.written() == {"tenants": 0, "connections": 0, "addresses": 0}


def test_the_internal_key_never_appears_in_the_server_output(hostile):
    client = hostile.client
    for key in (KEY, KEY + "x", KEY[:-1], ""):
        client.post(SYNC, content=b'{"tenantId": "\\ud800"}', headers={"X-Internal-Key": key})
        client.get(STATUS + "%00", headers={"X-Internal-Key": key})
        client.post(SYNC, content=padded(LIMIT + 1), headers={"X-Internal-Key": key})
    assert client.get("/healthz").status_code == 200
    output = hostile.served.stdout() + hostile.served.stderr()
    assert "http.request" in output
    assert KEY not in output and KEY[:-1] not in output
