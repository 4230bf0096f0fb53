"""Signals for one-shot commands: SIGTERM/SIGINT cancel the run's statements so its transaction
rolls back and it still emits its report, instead of dying mid-way (Kubernetes sends SIGTERM on
activeDeadlineSeconds and on eviction)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from reconcile.cancel import Cancellation

T = TypeVar("T")


def run_cancellable(work: Callable[[Cancellation], T]) -> T:
    """Run `work(cancel)` in a worker thread; the main thread stays free to handle signals while
    the worker is blocked inside the database driver."""
    cancel = Cancellation()
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = work(cancel)
        except BaseException as exc:  # re-raised in the main thread below
            outcome["error"] = exc

    def on_signal(signum: int, _frame: Any) -> None:
        cancel.cancel(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        worker = threading.Thread(target=target, name="run", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
