"""`tenant-reconcile demo` on an embedded PostgreSQL: the path a new operator takes first."""

from __future__ import annotations

import glob
import os
import tempfile

from tests.pgtools import run_cli


def test_demo_runs_plan_then_run_and_creates_kbz_003_and_kbz_004():
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "tenant-reconcile-pg-*")))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECONCILE_", "PRODUCT_", "MARKETPLACE_"))}
    result = run_cli("demo", env=env, timeout=180)
    assert result.code == 0, result.stderr
    reports = result.of("reconcile.report")
    assert [r["mode"] for r in reports] == ["dry-run", "apply"]
    for report in reports:
        assert report["created"] == ["kbz-003", "kbz-004"]
        assert report["updated"] == [{"id": "kbz-002", "changes": {"plan": ["STARTER", "PRO"]}}]
        assert report["archived"] == ["kbz-005"] and report["orphans"] == ["legacy-009"]
        assert report["status"] == "success"
    table = {row["tenant"]: row for row in result.of("demo.table")[0]["rows"]}
    assert table["kbz-003"]["marketplace_before"] is None
    assert table["kbz-003"]["marketplace_after"] == "DEV/TRIAL"
    assert table["kbz-005"]["marketplace_after"] == "STARTER/CLOSED"
    assert "kbz-004" in result.stderr and "❌" in result.stderr  # the human table
    # The embedded server and its data directory are gone.
    after = set(glob.glob(os.path.join(tempfile.gettempdir(), "tenant-reconcile-pg-*")))
    assert after <= before
