"""The benchmark harness end to end on 2,000 tenants: it runs, its JSON line is complete, and the
reconcile counts match the drift it generated. No timing is asserted (speed lives in benchmarks/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.pgtools import REPO


def test_harness_runs_and_counts_match_the_generated_drift():
    args = [sys.executable, "-m", "benchmarks.reconcile", "--tenants", "2000", "--drift", "0.02",
            "--baseline-tenants", "500", "--json-only"]
    if os.environ.get("RECONCILE_TEST_DATABASE_URL"):
        args += ["--url", os.environ["RECONCILE_TEST_DATABASE_URL"]]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["counts_match"] is True
    expected = summary["expected"]
    assert expected["created"] > 0 and expected["updated"] > 0 and expected["archived"] > 0
    assert expected["orphans"] == 10
    measures = summary["measures"]
    assert set(measures) >= {"floor", "plan", "run", "run_again", "baseline"}
    assert measures["run"]["counts"]["created"] == expected["created"]
    assert measures["run_again"]["counts"]["created"] == 0 and measures["run_again"]["counts"]["updated"] == 0
    assert measures["plan"]["counts"] == measures["run"]["counts"]
    assert measures["baseline"]["extrapolated_from"] == 2000  # never fewer than 20k, capped at N
    for m in measures.values():
        assert m["wall_s"] > 0 and m["rss_mb"] > 0
    assert set(summary["ratios"]) == {"run_over_floor", "baseline_over_run"}
