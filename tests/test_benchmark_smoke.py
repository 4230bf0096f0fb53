"""The benchmark harness end to end on 2,000 tenants, and its peak-RSS measurement.

No timing is asserted anywhere: speed is what the harness reports, not what tests check. What is
checked is that it runs, that its JSON line is complete, and that every count the reconcile runs
(and the per-tenant loop) report matches the drift the harness generated.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from benchmarks.reconcile import measure
from tests.pgtools import REPO

TENANTS = 2000
DRIFT = 0.02


def test_harness_runs_and_every_count_matches_the_generated_drift():
    args = [sys.executable, "-m", "benchmarks.reconcile", "--tenants", str(TENANTS), "--drift", str(DRIFT),
            "--ensure-inbound", "FR", "--json-only"]
    if os.environ.get("RECONCILE_TEST_DATABASE_URL"):
        args += ["--url", os.environ["RECONCILE_TEST_DATABASE_URL"]]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, "--json-only prints exactly one line"
    summary = json.loads(lines[0])

    assert set(summary) >= {"date", "command", "machine", "server", "tenants", "drift", "load_s", "expected",
                            "counts_match", "count_mismatches", "measures", "ratios", "targets", "notes"}
    assert summary["counts_match"] is True and summary["count_mismatches"] == {}
    expected = summary["expected"]
    assert expected["created"] > 0 and expected["updated"] > 0 and expected["archived"] > 0
    assert expected["orphans"] == round(TENANTS * DRIFT / 4)
    assert expected["created"] + expected["updated"] + expected["archived"] + expected["unchanged"] == TENANTS

    m = summary["measures"]
    assert list(m) == ["floor", "plan", "run", "run_again", "inbound", "inbound_again", "baseline"]
    first = {k: expected[k] for k in ("created", "updated", "archived", "unchanged", "orphans", "errors")}
    assert {k: m["run"]["counts"][k] for k in first} == first
    assert m["plan"]["counts"] == m["run"]["counts"]
    again = m["run_again"]["counts"]
    assert (again["created"], again["updated"], again["archived"], again["unchanged"], again["orphans"]) == (
        0, 0, 0, TENANTS, expected["orphans"])
    assert m["inbound"]["counts"]["inbound_created"] == expected["open_tenants"]  # one country
    assert m["inbound_again"]["counts"]["inbound_created"] == 0
    # The per-tenant loop saw the same drift: it made exactly the writes the run made.
    base = m["baseline"]
    assert base["extrapolated"] is False and base["extrapolated_from"] == TENANTS
    assert base["statements"] == {"selects": TENANTS, "inserts": expected["created"],
                                  "updates": expected["updated"], "archives": expected["archived"]}
    assert m["floor"]["rows"] == 2 * TENANTS - expected["created"] + expected["orphans"]
    for key, one in m.items():
        assert one["exit_code"] == 0, key
        assert one["wall_s"] > 0 and one["rss_mb"] > 0 and one["us_per_tenant"] > 0, key
    assert set(summary["ratios"]) == {"run_over_floor", "run_again_over_floor", "baseline_over_run"}
    assert summary["targets"] == {}  # targets are stated for 1M and 10M tenants


def test_peak_rss_is_the_childs_own_not_the_harness():
    """A child started straight from a large process inherits its RSS high-water mark on Linux;
    measured through the trampoline it reports only its own."""
    ballast = bytearray(256 << 20)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    env = dict(os.environ)
    small = measure("small", [sys.executable, "-c", "pass"], env)
    big = measure("big", [sys.executable, "-c",
                          "b = bytearray(200 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1"], env)
    failing = measure("failing", [sys.executable, "-c", "import sys; print('{}'); sys.exit(3)"], env)
    assert len(ballast) == 256 << 20
    assert 0 < small.rss_mb < 100, small
    assert big.rss_mb >= 200, big
    assert failing.exit_code == 3 and failing.last_line == "{}"
    missing = measure("missing", ["/nonexistent/command"], env)
    assert missing.exit_code == 127
