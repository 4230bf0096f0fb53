"""`demo` stopped by Ctrl-C or SIGTERM at any moment cleans up after itself: no embedded server left
running, no `tenant-reconcile-pg-*` directory left, no traceback, and exit 130 (SIGINT) or 143
(SIGTERM), i.e. 128 + the signal, as a shell reports a process the signal killed.

Real processes: the demo is started as `python -m jobs demo` and signalled after different delays,
so the signal lands in different phases (imports ~0-0.45 s, server start, seeding, plan/run,
stopping the server). Ctrl-C is sent as a terminal sends it, to the whole process group (so
`initdb`/`pg_ctl` children get it too); SIGTERM to the process only, as `kill` and Kubernetes do.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import suppress

import pytest

from tests.pgtools import REPO
from tests.test_demo import demo_env, leftovers, private_tmp

CASES = [
    (signal.SIGINT, 0.3),  # still importing: jobs.main turns it into one line, exit 130
    (signal.SIGINT, 0.6),
    (signal.SIGINT, 0.9),
    (signal.SIGINT, 1.2),
    (signal.SIGINT, 1.5),
    (signal.SIGTERM, 0.5),
    (signal.SIGTERM, 0.8),
    (signal.SIGTERM, 1.1),
    (signal.SIGTERM, 1.4),
]


@pytest.fixture()
def demo_tmp() -> Iterator[str]:
    with private_tmp() as root:
        yield root


def _start_demo(tmp_root: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "jobs", "demo"], cwd=REPO, env=demo_env(tmp_root),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _send(proc: subprocess.Popen, sig: int) -> None:
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # Ctrl-C: the terminal signals the foreground process group
    else:
        proc.send_signal(sig)


def _assert_clean_exit(proc: subprocess.Popen, sig: int, tmp_root: str, out: str, err: str) -> None:
    data_dirs, procs = leftovers(tmp_root)
    assert procs == [], f"embedded server left running: {procs}\nstderr: {err}"
    assert data_dirs == [], f"data directory left behind: {data_dirs}\nstderr: {err}"
    assert "Traceback" not in err, err
    events = [json.loads(line) for line in out.splitlines() if line.strip()]  # stdout stays JSON lines
    assert all(e.get("level") != "error" for e in events), out  # e.g. no initdb failure that Ctrl-C caused
    if proc.returncode == 0:  # finished before the signal came: nothing was interrupted
        assert '"demo.done"' in out, err
        return
    # 128 + signal from the demo's own handler; -signal only if the signal killed Python before the
    # demo started (nothing to clean up then), which a shell reports as the same 130/143.
    assert proc.returncode in (128 + sig, -sig), (proc.returncode, err)
    if proc.returncode == 128 + sig:
        assert err.strip().splitlines()[-1].startswith("tenant-reconcile: interrupted"), err


@pytest.mark.parametrize(("sig", "delay"), CASES,
                         ids=lambda v: signal.Signals(v).name if isinstance(v, signal.Signals) else f"{v}s")
def test_demo_interrupted_at_any_point_leaves_no_server_no_data_dir_no_traceback(sig, delay, demo_tmp):
    proc = _start_demo(demo_tmp)
    try:
        time.sleep(delay)
        with suppress(ProcessLookupError):  # already finished
            _send(proc, sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    _assert_clean_exit(proc, sig, demo_tmp, out, err)


def test_demo_impatient_ctrl_c_repeated_does_not_cut_the_cleanup_short(demo_tmp):
    """Ctrl-C pressed again and again (every 50 ms from 0.9 s on) while the demo cleans up."""
    proc = _start_demo(demo_tmp)
    try:
        time.sleep(0.9)
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                _send(proc, signal.SIGINT)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    _assert_clean_exit(proc, signal.SIGINT, demo_tmp, out, err)
    assert proc.returncode == 130, (proc.returncode, err)
