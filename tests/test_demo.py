"""`tenant-reconcile demo` on an embedded PostgreSQL: the path a new operator takes first.

Each demo runs with its own short TMPDIR, so what it leaves behind (a `tenant-reconcile-pg-*` data
directory, a server process whose command line or working directory is in there) is found
exactly, even while other test sessions start embedded servers of their own in /tmp.
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from tests.pgtools import run_cli

PG_DIR_GLOB = "tenant-reconcile-pg-*"


def demo_env(tmp_root: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECONCILE_", "PRODUCT_", "MARKETPLACE_"))}
    env["TMPDIR"] = tmp_root
    return env


def processes_in(root: str) -> list[str]:
    """Processes whose command line or working directory is under `root` (a postgres server started
    there: the postmaster has `-D <dir>` in its command line, every backend runs in the data dir)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        try:
            cwd = os.readlink(os.path.join(entry.path, "cwd"))
        except OSError:
            cwd = ""
        if root in cmdline or cwd.startswith(root):
            found.append(f"pid {entry.name}: {cmdline.strip()[:150]} (cwd {cwd})")
    return found


def leftovers(root: str, settle_s: float = 3.0) -> tuple[list[str], list[str]]:
    """(data directories, processes) still there under `root`, after up to `settle_s` for exiting
    processes to be gone."""
    deadline = time.monotonic() + settle_s
    while True:
        procs = processes_in(root)
        if not procs or time.monotonic() > deadline:
            return glob.glob(os.path.join(root, PG_DIR_GLOB)), procs
        time.sleep(0.1)


def _kill_tree_in(root: str) -> None:
    """Test safety net: stop any server a failed test left under `root` (only ours, by pid)."""
    for sig in (signal.SIGQUIT, signal.SIGKILL):
        for line in processes_in(root):
            pid = int(line.split()[1].rstrip(":"))
            with suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 5
        while processes_in(root) and time.monotonic() < deadline:
            time.sleep(0.1)


@contextmanager
def private_tmp() -> Iterator[str]:
    """A short private TMPDIR for one demo (short, so the server's socket fits in its data dir);
    whatever a failed test left running in there is stopped afterwards."""
    root = tempfile.mkdtemp(prefix="trd-", dir="/tmp")
    try:
        yield root
    finally:
        _kill_tree_in(root)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def demo_tmp() -> Iterator[str]:
    with private_tmp() as root:
        yield root


def test_demo_runs_plan_then_run_and_creates_kbz_003_and_kbz_004(demo_tmp):
    result = run_cli("demo", env=demo_env(demo_tmp), timeout=180)
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
    assert "kbz-004" in result.stderr  # the human table
    # The embedded server and its data directory are gone.
    assert leftovers(demo_tmp) == ([], [])


def test_demo_table_is_ascii_and_its_columns_align(demo_tmp):
    result = run_cli("demo", env=demo_env(demo_tmp), timeout=180)
    assert result.code == 0, result.stderr
    lines = result.stderr.strip("\n").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("tenant "))
    table = lines[start:start + 10]  # header, rule, 8 tenants
    assert all(line.isascii() for line in table), table  # no wide glyph (❌) to shift a terminal's columns
    bars = {tuple(i for i, ch in enumerate(line) if ch in "|+") for line in table}
    assert len(bars) == 1, table  # every column separator at the same offset on every line
    row = {line.split("|")[0].strip(): [c.strip() for c in line.split("|")] for line in table[2:]}
    assert row["kbz-003"][2] == "absent" and row["kbz-003"][3] == "DEV/TRIAL"
    assert row["legacy-009"][1] == "absent"


def _kept_lines(stderr: str) -> dict[str, str]:
    """The --keep block: `export PRODUCT_DATABASE_URL=...`, `export MARKETPLACE_DATABASE_URL=...`
    and the line after "stop it and delete its data with...:"."""
    lines = [line.strip() for line in stderr.splitlines()]
    out: dict[str, str] = {}
    for i, line in enumerate(lines):
        for var in ("PRODUCT_DATABASE_URL", "MARKETPLACE_DATABASE_URL"):
            if line.startswith(f"export {var}="):
                out[var] = shlex.split(line.split("=", 1)[1])[0]
        if line.startswith("stop it and delete its data with"):
            out["stop"] = lines[i + 1]
    return out


def test_demo_keep_leaves_the_server_running_and_prints_both_urls_and_the_stop_command(demo_tmp):
    result = run_cli("demo", "--keep", env=demo_env(demo_tmp), timeout=180)
    assert result.code == 0, result.stderr
    kept = _kept_lines(result.stderr)
    assert set(kept) == {"PRODUCT_DATABASE_URL", "MARKETPLACE_DATABASE_URL", "stop"}, result.stderr
    assert "still running" in result.stderr
    data_dirs, procs = leftovers(demo_tmp, settle_s=0)
    assert len(data_dirs) == 1 and procs, "the server should still be running"

    # Both URLs work, exactly as printed: the demo's reconcile left kbz-003 in sync.
    env = {k: v for k, v in demo_env(demo_tmp).items() if k != "TMPDIR"}
    env.update({"PRODUCT_DATABASE_URL": kept["PRODUCT_DATABASE_URL"],
                "MARKETPLACE_DATABASE_URL": kept["MARKETPLACE_DATABASE_URL"]})
    status = run_cli("status", "kbz-003", env=env)
    assert status.code == 0, status.stderr
    assert status.events[-1]["inSync"] is True

    # The printed command stops it (as the embedded_postgres user when we are root) and removes it.
    stop = subprocess.run(kept["stop"], shell=True, capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0, stop.stderr
    assert leftovers(demo_tmp) == ([], [])


def test_demo_keep_help_says_the_server_stays_running():
    result = run_cli("demo", "--help")
    assert result.code == 0
    assert "running" in " ".join(result.stdout.split())

