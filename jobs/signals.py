"""Signals for one-shot commands: SIGTERM/SIGINT cancel the run's statements so its transaction
rolls back and it still emits its report, instead of dying mid-way (Kubernetes sends SIGTERM on
activeDeadlineSeconds and on eviction).

The run works in a thread; the main thread only waits for it and handles signals. After a signal
the run normally ends within a few seconds (its calls are cancelled, then cut, see
reconcile.cancel); should it not end within STOP_BOUND_S, `on_overdue` is called (the caller emits
the failed report) and the process exits 7 all the same: a stopped run must end by itself.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from reconcile.cancel import Cancellation

T = TypeVar("T")

STOP_BOUND_S = 8.0
OVERDUE_EXIT = 7


def run_cancellable(work: Callable[[Cancellation], T], on_overdue: Callable[[str], None] | None = None) -> T:
    """Run `work(cancel)` in a worker thread; the main thread stays free to handle signals while
    the worker is blocked inside the database driver."""
    cancel = Cancellation()
    outcome: dict[str, Any] = {}
    stopped_at: list[float] = []

    def target() -> None:
        try:
            outcome["value"] = work(cancel)
        except BaseException as exc:  # re-raised in the main thread below
            outcome["error"] = exc

    def on_signal(signum: int, _frame: Any) -> None:
        if not stopped_at:
            stopped_at.append(time.monotonic())
        cancel.cancel(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        worker = threading.Thread(target=target, name="run", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(0.2)
            if stopped_at and worker.is_alive() and time.monotonic() - stopped_at[0] > STOP_BOUND_S:
                _give_up(cancel.reason or "a signal", on_overdue)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _give_up(reason: str, on_overdue: Callable[[str], None] | None) -> None:
    message = f"run stopped ({reason}) but still blocked after {STOP_BOUND_S:g}s; exiting without it"
    try:
        if on_overdue is not None:
            on_overdue(message)
        sys.stderr.write(f"tenant-reconcile: {message}\n")
        sys.stderr.flush()
    finally:
        os._exit(OVERDUE_EXIT)
