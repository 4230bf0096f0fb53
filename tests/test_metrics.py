"""Pushing run metrics: basic auth from the URL's credentials reaches a real HTTP server, and no part
of those credentials ever reaches the output, whether the push works or fails."""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from reconcile.metrics import PushgatewayUrl, push_report
from reconcile.report.logs import get_logger
from reconcile.report.model import Report
from tests.pgtools import EventLog

SECRET = "S3cr3tPa55"


def fragments(secret: str = SECRET) -> list[str]:
    return [secret[i:i + 4] for i in range(len(secret) - 3)]


class _Gateway(BaseHTTPRequestHandler):
    """Records each request with its Authorization header; answers `status` (an attribute of the server)."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        server: Any = self.server
        server.received.append((self.command, self.path, self.headers.get("Authorization"), body))
        self.send_response(server.status)
        self.end_headers()

    do_PUT = do_POST

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def gateway(status: int = 200) -> Iterator[tuple[int, list[tuple[str, str, str | None, str]]]]:
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
    server.received = []
    server.status = status
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], server.received
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def push(url: str) -> tuple[bool, EventLog]:
    events = EventLog()
    ok = push_report(PushgatewayUrl.parse(url, "--pushgateway"), Report(run_id="r", mode="apply"), get_logger())
    return ok, events


def test_credentials_in_the_url_become_basic_auth_and_never_reach_the_log():
    with gateway() as (port, received):
        ok, events = push(f"http://reconcile:{SECRET}@127.0.0.1:{port}")
    assert ok
    method, path, auth, body = received[0]
    assert method == "POST" and path.startswith("/metrics/job/tenant_reconcile/shard")
    assert auth == "Basic " + base64.b64encode(f"reconcile:{SECRET}".encode()).decode()
    assert "tenant_reconcile_last_run_status" in body
    assert events.of("metrics.pushed")[0]["pushgateway"] == f"http://127.0.0.1:{port}"
    text = events.stream.getvalue()
    assert all(f not in text for f in fragments())


def test_percent_encoded_credentials_are_decoded_for_basic_auth():
    with gateway() as (port, received):
        ok, _ = push(f"http://rec%40onc:p%2F{SECRET}%40@127.0.0.1:{port}")
    assert ok and received[0][2] == "Basic " + base64.b64encode(f"rec@onc:p/{SECRET}@".encode()).decode()


def test_a_url_without_credentials_sends_no_authorization_header():
    with gateway() as (port, received):
        ok, _ = push(f"http://127.0.0.1:{port}")
    assert ok and received[0][2] is None


def test_a_rejected_push_logs_the_http_status_and_no_credentials():
    with gateway(status=401) as (port, received):
        ok, events = push(f"http://reconcile:{SECRET}@127.0.0.1:{port}")
    assert not ok and received
    failed = events.of("metrics.push_failed")[0]
    assert failed["level"] == "warning" and failed["pushgateway"] == f"http://127.0.0.1:{port}"
    assert failed["error"].startswith("HTTPError") and "401" in failed["error"]
    assert all(f not in events.stream.getvalue() for f in fragments())


def test_an_unreachable_gateway_logs_the_os_error_and_no_credentials():
    port = closed_port()
    ok, events = push(f"http://reconcile:{SECRET}@127.0.0.1:{port}")
    failed = events.of("metrics.push_failed")[0]
    assert not ok and failed["error"].startswith("URLError") and "refused" in failed["error"].lower()
    assert all(f not in events.stream.getvalue() for f in fragments())


def test_an_unknown_host_logs_no_credentials():
    ok, events = push(f"http://reconcile:{SECRET}@no-such-host.invalid:9091")
    assert not ok and events.of("metrics.push_failed")
    text = events.stream.getvalue()
    assert all(f not in text for f in fragments()) and "no-such-host.invalid:9091" in text
