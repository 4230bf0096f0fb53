"""Stopping a run from another thread (a signal handler): cancel its statements, so PostgreSQL
rolls its transaction back, and stop it at the next phase boundary."""

from __future__ import annotations

import threading
from typing import Any

from reconcile.errors import DatabaseError


class Cancelled(DatabaseError):
    """The run was stopped; its transaction is rolled back and nothing is written (exit 7)."""


class Cancellation:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: list[Any] = []
        self.reason: str | None = None

    @property
    def requested(self) -> bool:
        return self.reason is not None

    def register(self, dbapi_connection: Any) -> None:
        """A psycopg2 connection whose running statement `cancel` must interrupt."""
        with self._lock:
            self._connections.append(dbapi_connection)
            if self.reason is not None:
                _cancel(dbapi_connection)

    def cancel(self, reason: str) -> None:
        with self._lock:
            if self.reason is None:
                self.reason = reason
            connections = list(self._connections)
        for connection in connections:
            _cancel(connection)

    def check(self) -> None:
        """Raise Cancelled if a stop was requested (called between the run's phases)."""
        if self.reason is not None:
            raise Cancelled(f"run stopped ({self.reason}); transaction rolled back, nothing written")


def _cancel(connection: Any) -> None:
    try:
        if not connection.closed:
            connection.cancel()  # psycopg2: thread-safe, sends a cancel request to the server
    except Exception:  # a connection already gone has nothing left to cancel
        pass
