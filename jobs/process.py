"""One process lifecycle for every command: how SIGTERM/SIGINT stop it.

The signal handler only records the first signal and wakes the main thread (a byte on a pipe):
no logging, no locks, no database calls, so it can never deadlock on something the interrupted
code holds. The main thread then does the stopping:

- one-shot work (`run`, `plan`, `sync`, `demo`) runs in a worker thread (`run_until_stopped`):
  on a stop its database calls are cancelled, and then cut (reconcile.db.cancel), so it ends with
  its report; should it still be running `overdue_after_s` later, the caller reports for it and the
  process exits 7 all the same;
- the scheduler waits on `StopSignal.wait()`, then stops taking runs and gives the current one its
  grace time (jobs.scheduler).

The handling starts before the heavy imports (`catch_signals_early`, from `jobs.main`): a signal
that comes while the command is still loading is recorded, and the StopSignal the command installs
acts on it at once; commands with nothing to stop cleanly get Python's own handling back
(`default_signals`).

Kubernetes sends SIGTERM at `activeDeadlineSeconds`, on eviction and on a rolling update.

Light to import (no database driver): `jobs.main` imports it first.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from reconcile.threads import Worker

if TYPE_CHECKING:
    from reconcile.db.cancel import Cancellation

T = TypeVar("T")
_EARLY: list[int] = []  # the first SIGTERM/SIGINT that came before a StopSignal was installed


def _record_early(signum: int, _frame: Any) -> None:
    if not _EARLY:
        _EARLY.append(signum)


def catch_signals_early() -> None:
    """From `jobs.main`, before the heavy imports: from now on a SIGTERM/SIGINT is recorded instead
    of killing the process half-way through its imports; the StopSignal the command installs
    (`run`, `sync`, `status`, `check`, `schedule`, `serve`, `demo`) sees it at once and stops as
    for any later signal (a run with its report)."""
    if threading.current_thread() is threading.main_thread():
        for sig in StopSignal.SIGNALS:
            signal.signal(sig, _record_early)


def default_signals() -> None:
    """For a command with nothing to stop cleanly (`show`, `init-db`, `install-trigger`): Python's own
    handling back (SIGINT is KeyboardInterrupt, SIGTERM ends the process), and a signal recorded
    while it was loading delivered now."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if _EARLY:
        signal.raise_signal(_EARLY[0])

STOP_BOUND_S = 8.0
OVERDUE_EXIT = 7


class StopSignal:
    """SIGTERM/SIGINT as a request to stop. Later signals change nothing, and the handlers stay
    installed after `close()`, so a late signal cannot kill the process on its way out."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self._previous: dict[int, Any] = {}

    def install(self) -> StopSignal:
        """From the main thread, as early as possible; a signal recorded before (`catch_signals_early`)
        counts as received now."""
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._on_signal)
            if _EARLY:
                self._on_signal(_EARLY[0], None)
        return self

    def restore(self) -> None:
        """Give the signals back to whoever had them (a command that is done with its work)."""
        for sig, handler in self._previous.items():
            if handler is _record_early:  # the early recorder is not an owner: Python's own handling
                handler = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
            signal.signal(sig, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.signum is not None:
            return
        self.signum = signum
        if self._write_fd >= 0:
            with contextlib.suppress(OSError):  # a full pipe: the waiter sees `signum` anyway
                os.write(self._write_fd, b"!")

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def poke(self) -> None:
        """Wake a `wait` from another thread, to look at its `until` again (a stop it is not)."""
        if self._write_fd >= 0:
            with contextlib.suppress(OSError):
                os.write(self._write_fd, b".")

    def wait(self, timeout: float | None = None, until: Callable[[], bool] | None = None) -> bool:
        """Block until a stop is requested, `until()` is true after a `poke`, or `timeout` passes;
        True when a stop was requested."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.signum is None and self._read_fd >= 0 and not (until is not None and until()):
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            with contextlib.suppress(InterruptedError):
                ready, _, _ = select.select([self._read_fd], [], [], left)
                if ready:
                    os.read(self._read_fd, 1)
            if deadline is not None and time.monotonic() >= deadline:
                break
        return self.signum is not None

    def close(self) -> None:
        """Release the pipe (the handlers stay: see the class doc)."""
        fds, self._read_fd, self._write_fd = (self._read_fd, self._write_fd), -1, -1
        for fd in fds:
            if fd >= 0:
                os.close(fd)


def run_until_stopped(work: Callable[[Cancellation], T], *, on_overdue: Callable[[str], None] | None = None,
                      overdue_after_s: float = STOP_BOUND_S, stop: StopSignal | None = None,
                      restore: bool = True) -> T:
    """Run `work(cancel)` in a worker thread while the main thread waits for it or for a stop
    request; a stop cancels the work (`cancel.cancel`), which then ends by itself with its report.
    Returns what `work` returned, or raises what it raised. With `restore` False the handlers stay
    (the process is about to exit and a late signal must not kill it half-way)."""
    from reconcile.db.cancel import Cancellation

    stop = stop or StopSignal()
    stop.install()
    cancel = Cancellation()
    stopped_at: float | None = None
    if stop.requested:  # a signal while the command was loading: the work starts stopped
        stopped_at = time.monotonic()
        cancel.cancel(stop.name)
    done = threading.Event()

    def work_then_wake() -> T:
        try:
            return work(cancel)
        finally:
            done.set()
            stop.poke()  # the main thread notices the end at once, not at its next 0.2 s tick

    worker = Worker(work_then_wake, "work").start()
    try:
        while not done.is_set():
            if stopped_at is None:
                if stop.wait(0.2, until=done.is_set):
                    stopped_at = time.monotonic()
                    cancel.cancel(stop.name)
            elif not done.wait(0.2) and time.monotonic() - stopped_at > overdue_after_s:
                _give_up(stop.name, overdue_after_s, on_overdue)
        worker.join(5.0)  # `done` is set in its last lines: it ends at once
    finally:
        if restore:
            stop.restore()
        stop.close()
    return worker.result()


def ignore_signals() -> None:
    """The process is on its way out: a further SIGINT/SIGTERM has nothing left to stop, and must not
    kill it half-way through its last words (a shell would then see a death by signal)."""
    if threading.current_thread() is threading.main_thread():
        for sig in StopSignal.SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


def exit_now(code: int) -> NoReturn:
    """Leave at once, after flushing what was printed: no interpreter teardown (~0.1 s of unloading
    modules for a one-shot command whose work is done and written), and no wait for a worker thread
    still blocked where it cannot be cut. Nothing is left to do at exit: runs commit or roll back
    before their report, report and plan files are written and closed, temp files are unlinked."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()
    os._exit(code)


def _give_up(reason: str, bound_s: float, on_overdue: Callable[[str], None] | None) -> None:
    message = f"run stopped ({reason}) but still blocked after {bound_s:g}s; exiting without it"
    try:
        if on_overdue is not None:
            on_overdue(message)
        sys.stderr.write(f"tenant-reconcile: {message}\n")
    finally:
        exit_now(OVERDUE_EXIT)


CANCELLED_RUN_BOUND_S = 10.0


class RunSlot:
    """One run at a time in a long-running process: the cron's full runs and the event batches of
    `schedule --listen` take turns here (a full run excludes batches, a batch waits for a full run;
    across processes the run lock does the same). `finish` is the one way a stop ends the run in
    progress: its grace time, then its statements cancelled so its transaction rolls back."""

    def __init__(self, stopping: Callable[[], bool], log: Any) -> None:
        self._stopping = stopping
        self._log = log
        self._running: Cancellation | None = None
        self._idle = threading.Condition()

    def run(self, work: Callable[[Cancellation], T]) -> T | None:
        """`work(cancel)` once the slot is free; None, without running it, when a stop comes first."""
        from reconcile.db.cancel import Cancellation

        with self._idle:
            while self._running is not None and not self._stopping():
                self._idle.wait(0.2)
            if self._stopping():
                return None
            cancel = self._running = Cancellation()
        try:
            return work(cancel)
        finally:
            with self._idle:
                self._running = None
                self._idle.notify_all()

    def finish(self, reason: str, grace_s: float) -> None:
        """After a stop: let the run in progress end within `grace_s`, else cancel it; never wait
        for ever (a cancelled run ends within a few seconds, its calls are cut)."""
        with self._idle:
            if self._running is None:
                return
            deadline = time.monotonic() + grace_s
            while self._running is not None and time.monotonic() < deadline:
                self._idle.wait(min(0.2, max(deadline - time.monotonic(), 0.0)))
            if self._running is not None:
                self._log.warning("schedule.cancelling_run", detail=f"still running after {grace_s:g}s; "
                                  "its transaction is rolled back")
                self._running.cancel(f"{reason}, grace period over")
            deadline = time.monotonic() + CANCELLED_RUN_BOUND_S
            while self._running is not None and time.monotonic() < deadline:
                self._idle.wait(0.2)
            if self._running is not None:
                self._log.error("schedule.run_abandoned", detail=f"the cancelled run did not end within "
                                f"{CANCELLED_RUN_BOUND_S:g}s; exiting without it (nothing it did is committed)")
