"""`serve` under faults. Stopped by SIGTERM while its runs are stalled on a database: the process
ends within 10 s, exit 0; each request in flight is cancelled (rolled back, nothing written) and
answered 503 with a JSON error while its connection is still open. A run that committed is answered
as committed, whatever fails after the commit."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.faults.harness import INSERT, assert_no_secret, assert_nothing_written, market_state
from tests.pgtools import REPO, wait_until_serving
from tests.test_http import free_port


class Serving:
    def __init__(self, proc: subprocess.Popen, client: httpx.Client, out: Path, err: Path) -> None:
        self.proc, self.client, self.out, self.err = proc, client, out, err

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.startswith("{")]

    def stderr(self) -> str:
        return self.err.read_text()


@contextmanager
def serving(env: dict[str, str], tmp_path: Path) -> Iterator[Serving]:
    port = free_port()
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "jobs", "serve", "--port", str(port)], env=env, cwd=REPO,
                                stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, start_new_session=True)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        wait_until_serving(client, proc, 30, err.read_text)
        yield Serving(proc, client, out, err)
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def in_background(call: Any) -> tuple[threading.Thread, list[Any]]:
    """`call()` in a thread; its result (or the exception it raised) lands in the list."""
    got: list[Any] = []

    def target() -> None:
        try:
            got.append(call())
        except Exception as exc:  # a connection closed without an answer, say
            got.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, got


@pytest.mark.parametrize("endpoint", ["sync", "sync-all"])
def test_sigterm_ends_serve_within_10s_and_answers_the_runs_it_cancels_503(faults, tmp_path, endpoint):
    faults.dbs.add_product(("solo", "Solo", "pro", "active"))
    before = market_state(faults.dbs)
    rule = faults.market.add("stall", marker=INSERT, direction="s2c")  # the INSERT ran; its answer never comes
    env = faults.env(RECONCILE_NETWORK_TIMEOUT="120", KEYBUZZ_DEV_MODE="true")
    with serving(env, tmp_path) as served:
        thread, answers = in_background(lambda: served.client.post(f"/api/v1/tenants/{endpoint}",
                                                                   json={"tenantId": "solo"}))
        assert rule.wait(30), "the request never reached its INSERT"
        time.sleep(0.3)
        signalled = time.monotonic()
        served.proc.send_signal(signal.SIGTERM)
        try:
            code = served.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            code = None
        elapsed = time.monotonic() - signalled
        thread.join(10)
        stderr = served.stderr()
        assert code is not None, f"serve still running 20 s after SIGTERM; stderr: {stderr[-800:]}"
        assert elapsed < 10, f"serve took {elapsed:.1f}s to exit after SIGTERM (exit {code})"
        assert code == 0, f"exit {code}; stderr: {stderr[-800:]}"
        assert answers and isinstance(answers[0], httpx.Response), f"no answer: {answers}"
        answer = answers[0]
        assert answer.status_code == 503, (answer.status_code, answer.text)
        assert answer.json()["success"] is False and "SIGTERM" in answer.json()["error"], answer.text
        reports = [e for e in served.events() if e.get("event") == "reconcile.report"]
        assert len(reports) == 1 and reports[0]["status"] == "failed", reports
        assert "Traceback" not in stderr, stderr[-1500:]
        assert_no_secret(served.out.read_text(), stderr)
    assert_nothing_written(faults.dbs, before)


def test_a_committed_sync_all_is_answered_200_even_when_its_unchanged_list_cannot_be_read(faults, tmp_path):
    faults.dbs.add_product(("new", "New", "pro", "active"), ("same", "Same", "pro", "active"))
    faults.dbs.add_market(("same", "Same", "PRO", "ACTIVE"))
    rule = faults.product.add("reset", marker=b"SELECT id FROM tenants WHERE")  # read after the commit
    with serving(faults.env(KEYBUZZ_DEV_MODE="true"), tmp_path) as served:
        answer = served.client.post("/api/v1/tenants/sync-all")
        assert rule.fired.is_set(), "sync-all never read its unchanged ids"
        assert answer.status_code == 200, (answer.status_code, answer.text)
        body = answer.json()
        assert body["success"] is True and body["results"]["created"] == ["new"], body
        assert body["results"]["skipped"] == [] and body["truncated"] is True, body
        assert [e for e in served.events() if e.get("event") == "http.unchanged_ids_failed"]
    assert "new" in faults.dbs.market()
