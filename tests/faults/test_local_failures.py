"""Local failures are named: a temp directory that is full, read-only or missing is exit 7 with one
line naming the directory and the OS error; stdout closed early does not change the exit code nor
lose the report file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.faults.harness import (
    BULK,
    assert_failed_run,
    assert_no_secret,
    assert_nothing_written,
    cli_argv,
    market_state,
    run,
    seed_bulk,
    tenant_rows,
)
from tests.pgtools import REPO


@contextmanager
def tiny_tmpfs(where: Path, size: str = "64k", read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `where` (needs root and mount rights), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=1777", "tmpfs", str(where)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        if read_only:
            remounted = subprocess.run(["mount", "-o", "remount,ro", str(where)], capture_output=True, text=True,
                                       check=False)
            if remounted.returncode != 0:
                pytest.skip(f"cannot remount the tmpfs read-only: {remounted.stderr.strip()}")
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


def assert_named_local_failure(out, faults, before, directory: Path, os_error: str) -> None:
    report = assert_failed_run(out, bound=30, names=(str(directory),))
    assert os_error in report["error"], f"the error does not give the OS error {os_error!r}: {report['error']!r}"
    assert_nothing_written(faults.dbs, before)


def test_a_full_temp_directory_is_exit_7_naming_it_and_no_space_left(faults, tmp_path):
    seed_bulk(faults.dbs, **BULK)  # a product snapshot of ~100 kB: more than the 64 kB there is
    before = market_state(faults.dbs)
    with tiny_tmpfs(tmp_path / "tiny") as tiny:
        out = run("run", env=faults.direct_env(TMPDIR=str(tiny)), deadline=40)
    assert_named_local_failure(out, faults, before, tiny, "No space left on device")


def test_a_read_only_temp_directory_is_exit_7_naming_it_and_read_only(faults, tmp_path):
    seed_bulk(faults.dbs, **BULK)
    before = market_state(faults.dbs)
    with tiny_tmpfs(tmp_path / "ro", read_only=True) as read_only:
        out = run("run", env=faults.direct_env(TMPDIR=str(read_only)), deadline=40)
    assert_named_local_failure(out, faults, before, read_only, "Read-only file system")


def test_a_missing_temp_directory_is_exit_7_naming_it_and_no_such_directory(faults, tmp_path):
    seed_bulk(faults.dbs, new=50, same=50)
    before = market_state(faults.dbs)
    missing = tmp_path / "no" / "such" / "dir"
    out = run("run", env=faults.direct_env(TMPDIR=str(missing)), deadline=40)
    assert_named_local_failure(out, faults, before, missing, "No such file or directory")


def test_stdout_closed_early_keeps_the_runs_exit_code_and_the_report_file(faults, tmp_path):
    seeded = seed_bulk(faults.dbs, new=2000)  # 2000 tenant.created events after the commit
    report_file = tmp_path / "report.json"
    stderr_file = tmp_path / "stderr.txt"
    with stderr_file.open("wb") as stderr:
        proc = subprocess.Popen(cli_argv("run", "--report-file", str(report_file)), env=faults.direct_env(),
                                cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr)
        try:
            assert proc.stdout is not None
            head = b""
            while len(head) < 200:  # like `| head -c 200`
                chunk = os.read(proc.stdout.fileno(), 200 - len(head))
                if not chunk:
                    break
                head += chunk
            proc.stdout.close()
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    errors = stderr_file.read_text(encoding="utf-8", errors="replace")
    assert head.startswith(b'{"event":"reconcile.start"'), head
    assert code == 0, f"exit {code}, expected 0 (the run committed); stderr: {errors[-1500:]}"
    assert "Traceback" not in errors, errors[-1500:]
    assert report_file.exists(), "the report file was not written"
    text = report_file.read_text(encoding="utf-8")
    written = json.loads(text)
    assert written["event"] == "reconcile.report" and written["status"] == "success", written.get("status")
    assert written["counts"]["created"] == len(seeded.new)
    assert len(tenant_rows(faults.dbs)) == len(seeded.new)
    assert_no_secret(errors, text)


def run_with_stdout(args: list[str], env: dict[str, str], stdout_redirect: str, tmp_path: Path) -> tuple[int, str]:
    """The CLI through a shell with its stdout redirected as a shell does it (`>&-` closes it,
    `>/dev/full` makes every write fail with ENOSPC); (exit code, stderr)."""
    argv = " ".join(f"'{a}'" for a in cli_argv(*args))
    stderr_file = tmp_path / "stderr.txt"
    with stderr_file.open("wb") as stderr:
        code = subprocess.run(["sh", "-c", f"exec {argv} {stdout_redirect}"], env=env, cwd=REPO,
                              stdin=subprocess.DEVNULL, stderr=stderr, timeout=120, check=False).returncode
    return code, stderr_file.read_text(encoding="utf-8", errors="replace")


@pytest.mark.parametrize("redirect", [">&-", ">/dev/full"], ids=["stdout closed", "stdout ENOSPC"])
def test_stdout_that_cannot_be_written_keeps_the_runs_exit_code_and_the_report_file(faults, tmp_path, redirect):
    if redirect == ">/dev/full" and not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    seeded = seed_bulk(faults.dbs, new=500)  # 500 tenant.created events after the commit
    report_file = tmp_path / "report.json"
    code, errors = run_with_stdout(["run", "--report-file", str(report_file)], faults.direct_env(), redirect,
                                   tmp_path)
    assert code == 0, f"exit {code}, expected 0 (the run committed); stderr: {errors[-1500:]}"
    assert "Traceback" not in errors and "Exception ignored" not in errors, errors[-1500:]
    lines = errors.strip().splitlines()
    assert len(lines) <= 1 and all("stdout" in line for line in lines), errors[-1500:]
    assert report_file.exists(), "the report file was not written"
    written = json.loads(report_file.read_text(encoding="utf-8"))
    assert written["status"] == "success" and written["counts"]["created"] == len(seeded.new)
    assert len(tenant_rows(faults.dbs)) == len(seeded.new)
    assert_no_secret(errors)


def test_a_failed_run_with_stdout_closed_keeps_its_exit_code_and_report_file(faults, tmp_path):
    faults.dbs.add_product(("a", "A", "pro", "active"))
    report_file = tmp_path / "report.json"
    env = faults.direct_env(MARKETPLACE_DATABASE_URL="postgresql://u@127.0.0.1:1/m")
    code, errors = run_with_stdout(["run", "--report-file", str(report_file)], env, ">&-", tmp_path)
    assert code == 7, errors[-1500:]
    assert json.loads(report_file.read_text(encoding="utf-8"))["status"] == "failed"
    assert "Traceback" not in errors and "cannot connect to the marketplace database" in errors, errors[-1500:]
