"""Stopping a run from another thread (a signal handler, the scheduler's stop): cancel its
statements so PostgreSQL rolls its transaction back, and stop it at the next phase boundary.

A cancel request travels on a new connection to the server, so it cannot get through a stalled
network path; whatever is still blocked `ABORT_AFTER_S` later is cut (socket shutdown, see
reconcile.db.watchdog), which ends the blocked call at once.
"""

from __future__ import annotations

import threading
from typing import Any

from reconcile.db.watchdog import WatchedConnection
from reconcile.errors import DatabaseError

ABORT_AFTER_S = 2.0
# What a stopped run says; a command that only reads says it in its own words (`Cancellation.check`).
RUN_STOPPED = "run stopped ({reason}); transaction rolled back, nothing written"


class Cancelled(DatabaseError):
    """The run was stopped; its transaction is rolled back and nothing is written (exit 7)."""


class Cancellation:
    def __init__(self, abort_after_s: float = ABORT_AFTER_S) -> None:
        self._lock = threading.Lock()
        self._connections: list[Any] = []
        self._stopped = threading.Event()
        self.abort_after_s = abort_after_s
        self.reason: str | None = None

    @property
    def requested(self) -> bool:
        return self.reason is not None

    def register(self, dbapi_connection: Any) -> None:
        """A psycopg2 connection whose running statement a stop must interrupt."""
        with self._lock:
            self._connections.append(dbapi_connection)
            stopping = self.reason is not None
        if stopping:
            _interrupt(dbapi_connection, self.reason or "stopped", self.abort_after_s)

    def cancel(self, reason: str) -> None:
        """Ask the run to stop. Returns at once (safe in a signal handler of the main thread)."""
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
            connections = list(self._connections)
        self._stopped.set()
        for connection in connections:
            _interrupt(connection, reason, self.abort_after_s)

    def wait(self, seconds: float) -> None:
        """Sleep up to `seconds`, waking as soon as a stop is requested (for retry and lock waits)."""
        self._stopped.wait(max(seconds, 0.0))

    def check(self, message: str = RUN_STOPPED) -> None:
        """Raise Cancelled if a stop was requested (called between the run's phases); `message` may
        hold `{reason}` (SIGTERM, ...)."""
        if self.reason is not None:
            raise Cancelled(message.format(reason=self.reason))


def _interrupt(connection: Any, reason: str, abort_after_s: float) -> None:
    """Cancel the running statement, then cut the connection if it is still open `abort_after_s`
    later. Never blocks the caller (a signal handler): both happen in daemon threads."""
    if not isinstance(connection, WatchedConnection):
        return  # only the run's own connections (made by engine_for) are registered
    if connection.closed:
        return
    connection.request_cancel()
    timer = threading.Timer(abort_after_s, lambda: connection.closed or connection.abort(f"stopped ({reason})"))
    timer.daemon = True
    timer.start()
