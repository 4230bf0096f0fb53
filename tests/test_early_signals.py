"""A SIGTERM that comes right after a command starts (while Python is still importing it) stops it
as one that comes later would: a run ends with its report and exit 7, a sync with its report and
its answer, `status` and `check` with one stderr line and exit 7, `schedule` and `serve` with exit
0 - never a raw death by the signal (a shell's 143).

Real processes, signalled 0.05 s and 0.3 s after they were spawned. 0.05 s may land before the
interpreter runs any of the tool's code (its own start-up takes about that long on a loaded
machine): nothing can catch a signal then, and nothing has started, so a raw death with no output
at all is accepted for that delay only."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.pgtools import REPO
from tests.test_http import free_port

COMMANDS = {
    "run": ["run"],
    "sync": ["sync", "a"],
    "status": ["status", "a"],
    "check": ["check"],
    "schedule": ["schedule"],
    "serve": ["serve", "--port", "0"],
}
DELAYS = [0.05, 0.3]


def signalled(args: list[str], env: dict[str, str], delay: float) -> tuple[int, str, str, float]:
    proc = subprocess.Popen([sys.executable, "-m", "jobs", *args], env=env, cwd=REPO, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err, time.monotonic() - sent


def events(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.mark.parametrize("delay", DELAYS, ids=lambda d: f"{d}s")
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_sigterm_right_after_start_stops_the_command_as_a_later_one_would(dbs, command, delay):
    dbs.add_product(("a", "A", "pro", "active"))
    args = COMMANDS[command]
    if command == "serve":
        args = ["serve", "--port", str(free_port())]
    code, out, err, took = signalled(args, dbs.env(KEYBUZZ_DEV_MODE="true"), delay)
    if code == -signal.SIGTERM and delay < 0.1 and not out and not err:
        return  # killed before the interpreter ran any of our code: nothing had started
    assert code != -signal.SIGTERM, f"`{command}` died of the signal (a shell's 143) after {delay}s: {err[-500:]}"
    assert took < 10, f"`{command}` took {took:.1f}s to end after the signal"
    assert "Traceback" not in err, err[-1500:]
    if command in ("schedule", "serve"):
        assert code == 0, (code, err[-800:])
        return
    assert code == 7, (code, out[-800:], err[-800:])
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tenant-reconcile: ") and "SIGTERM" in lines[0], err
    if command in ("run", "sync"):
        reports = [e for e in events(out) if e.get("event") == "reconcile.report"]
        assert len(reports) == 1 and reports[0]["status"] == "failed", out[-800:]
        assert "SIGTERM" in reports[0]["error"], reports[0]["error"]
    if command == "sync":
        assert events(out)[-1]["success"] is False, out[-300:]
    assert dbs.market() == {}, "something was written"
