"""The event-path benchmark end to end at a tiny size, and how it decides that a change arrived.

No timing is asserted: lag, CPU and memory are what the harness reports, not what tests check.
What is checked: it runs against a real listener, real PostgreSQL and Redis; every change it made
arrived (none lost); the listener stopped with exit 0 on SIGTERM; the final plan was empty; the
JSON line carries every figure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from benchmarks.eventlag import SentChange, delivery_times, lag_summary, version
from benchmarks.events import rss_flat
from tests.listening import REDIS_URL, redis_client
from tests.pgtools import REPO

RATE, SECONDS = 20, 2


def _server_args() -> list[str]:
    """The harness's private server when this machine has server binaries, else the test server."""
    from benchmarks.privatepg import find_bindir

    try:
        find_bindir(None)
        return []
    except RuntimeError:
        if os.environ.get("RECONCILE_TEST_DATABASE_URL"):
            return ["--url", os.environ["RECONCILE_TEST_DATABASE_URL"]]
        pytest.skip("no PostgreSQL server binaries and no RECONCILE_TEST_DATABASE_URL")


@pytest.mark.slow
def test_every_change_arrives_and_the_json_line_has_every_figure():
    redis_client()
    args = [sys.executable, "-m", "benchmarks.events", "--sources", "pg,redis", "--rates", str(RATE),
            "--seconds", str(SECONDS), "--tenants", "300", "--redis-url", REDIS_URL,
            "--json-only", *_server_args()]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, "--json-only prints exactly one line"
    summary = json.loads(lines[0])
    assert set(summary) >= {"benchmark", "date", "command", "machine", "server", "tenants", "poll_interval_s", "mix",
                            "statements_counted", "runs", "ok"}
    assert summary["ok"] is True
    assert [(r["source"], r["rate"]) for r in summary["runs"]] == [("pg", RATE), ("redis", RATE)]
    for run in summary["runs"]:
        assert run["failures"] == [] and run["ok"] is True, run
        assert run["sent"] == RATE * SECONDS == run["delivered"] and run["lost"] == 0, run
        assert sum(run["sent_by_kind"].values()) == run["sent"]
        assert set(run["lag_ms"]) == {"p50", "p95", "p99", "max", "mean"}
        assert all(isinstance(v, float) for v in run["lag_ms"].values()), run["lag_ms"]
        assert run["stop"]["exit_code"] == 0
        assert run["final_plan"] == {"exit_code": 0, "created": 0, "updated": 0, "archived": 0, "orphans": 0}
        listener = run["listener"]
        assert listener["cpu_share"] is not None and listener["rss_mb"]["start"] > 0
        assert run["listener_log"]["reports"]["startup"] == 1 and run["listener_log"]["reports"]["event"] >= 1
        assert run["targets"]["lost==0"]["met"] is True
        statements = run["statements"]
        assert statements["batches"] == run["listener_log"]["reports"]["event"]
        if summary["statements_counted"]:
            for side in ("marketplace", "product"):
                assert statements[side]["statements"] > 0 and statements[side]["transactions"] > 0, statements
                assert statements[side]["per_change"] > 0


def _change(seq: int, tenant: str, kind: str = "update", commit: float = 0.0) -> SentChange:
    return SentChange(seq, kind, tenant, commit, commit)


def test_a_change_is_delivered_by_its_own_token_a_later_one_or_the_close():
    changes = [_change(1, "a"), _change(2, "a"), _change(3, "b"), _change(4, "c", "archive"), _change(5, "d"),
               _change(6, "e")]
    seen = [(10.0, "a", version("b2", "ACTIVE")),    # coalesced: 1 and 2 arrive together
            (11.0, "b", version("Tenant 9", "ACTIVE")),  # not b's token: 3 still pending
            (12.0, "c", version("Tenant 7", "CLOSED")),  # an archive shows as the status
            (13.0, "d", version("b4", "ACTIVE")),    # an older token than 5: not delivered
            (14.0, "b", version("b3", "ACTIVE"))]
    assert delivery_times(changes, seen) == [10.0, 10.0, 14.0, 12.0, None, None]
    summary = lag_summary(changes, delivery_times(changes, seen))
    assert (summary["sent"], summary["delivered"], summary["lost"]) == (6, 4, 2)
    assert summary["lost_examples"] == ["update d b5", "update e b6"]


def test_rss_is_flat_unless_the_second_half_keeps_growing():
    assert rss_flat([60.0, 61.0, 61.5, 61.0, 61.2, 61.4])["flat"] is True
    assert rss_flat([60.0, 62.0, 64.0, 66.0, 68.0, 70.0])["flat"] is False
    assert rss_flat([60.0, 61.0])["flat"] is None
