"""Client-side bounds on every wait on an open database connection.

TCP keepalives and `tcp_user_timeout` (set on every connection, see reconcile.db) catch a peer that
stops acknowledging; they cannot catch a peer that acknowledges and forwards nothing (a stalled
proxy or load balancer answers keepalives forever). So every blocking call on a connection made by
`engine_for` is watched: when a call has seen no data for `timeout_s`, a short probe connection asks
the server what our backend is doing. Working (running, waiting on a lock or on disk): keep waiting,
the server's statement_timeout bounds that. Waiting for us, gone, or the server unreachable: the
connection is cut (socket shutdown), which ends the blocked call at once with a driver error, and
the run reports it (exit 7).

The same cut is how a stop request (SIGTERM) ends a call that a cancel request cannot reach.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import IO, Any

import psycopg2
import psycopg2.extensions

TICK_S = 0.5
PROBE_TIMEOUT_S = 5.0
PROBE_APPLICATION = "tenant-reconcile (probe)"
_TCP_INFO_LEN = 104
_LAST_DATA_RECV = 8 + 4 * 11  # struct tcp_info: 8 one-byte fields, then u32s; tcpi_last_data_recv is the 12th


class WatchedConnection(psycopg2.extensions.connection):
    """A psycopg2 connection whose blocking calls the watchdog can see and cut.

    `engine_for` makes one subclass per engine carrying the settings below as class attributes,
    because psycopg2 builds the connection itself from `connection_factory`."""

    watch_timeout_s: float = 30.0
    watch_probe_dsn: str = ""       # holds the password: never printed
    watch_display: str = ""         # host:port/db
    watch_connect_timeout_s: int = 5

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cursor_factory = WatchedCursor
        self.abort_reason: str | None = None
        self._guard = threading.Lock()
        self._depth = 0
        self._progress = 0.0
        self._backend_pid = self.info.backend_pid
        # Our own handle on the socket, for as long as the connection lives: shutting it down ends a
        # call blocked in libpq, and holding it means the descriptor can never be reused meanwhile.
        self._socket: socket.socket | None = socket.socket(fileno=os.dup(self.fileno()))
        WATCHDOG.add(self)

    # -- what the watchdog reads ---------------------------------------------------------------
    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Mark a blocking call (re-entrant: a COPY inside a wrapped execute counts once)."""
        with self._guard:
            if self._depth == 0:
                self._progress = time.monotonic()
            self._depth += 1
        try:
            yield
        finally:
            with self._guard:
                self._depth -= 1

    def progressed(self) -> None:
        self._progress = time.monotonic()

    def quiet_for(self, now: float) -> float | None:
        """Seconds the current call has gone without data, or None when no call is blocked."""
        if self._depth == 0 or self._socket is None:
            return None
        last = self._progress
        received = _last_data_received(self._socket)
        if received is not None:
            last = max(last, now - received)
        return now - last

    def abort(self, reason: str) -> None:
        """Cut the connection: the call blocked on it fails at once. Idempotent, any thread."""
        with self._guard:
            if self._socket is None:
                return
            if self.abort_reason is None:
                self.abort_reason = reason
                WATCHDOG.note_cut(self.watch_display, reason)
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)

    def request_cancel(self) -> None:
        """Ask the server to cancel the running statement, from a daemon thread and on a new
        session (`pg_cancel_backend`): psycopg2's own cancel() holds the GIL while it waits for the
        server, which through a stalled path freezes every thread of the process."""
        def send() -> None:
            with contextlib.suppress(psycopg2.Error):
                side = psycopg2.connect(self.watch_probe_dsn, connect_timeout=self.watch_connect_timeout_s,
                                        application_name=PROBE_APPLICATION,
                                        options=f"-c statement_timeout={int(PROBE_TIMEOUT_S * 1000)}")
                try:
                    side.autocommit = True
                    with side.cursor() as cur:
                        cur.execute("SELECT pg_cancel_backend(%s)", (self._backend_pid,))
                finally:
                    side.close()

        threading.Thread(target=send, name="cancel-request", daemon=True).start()

    # -- calls ------------------------------------------------------------------------------------
    def commit(self) -> None:
        with self.busy():
            super().commit()

    def rollback(self) -> None:
        with self.busy():
            super().rollback()

    def close(self) -> None:
        WATCHDOG.discard(self)
        try:
            super().close()
        finally:
            with self._guard:
                sock, self._socket = self._socket, None
            if sock is not None:
                sock.close()


class _Progress:
    """A COPY source that tells the connection data is moving (psycopg2 reads it in large chunks).
    Sinks are not wrapped: psycopg2 writes one call per row, and the kernel's count of received
    data (TCP_INFO) already shows progress in that direction."""

    def __init__(self, file: IO[bytes], conn: WatchedConnection) -> None:
        self._file = file
        self._conn = conn

    def read(self, size: int = -1) -> bytes:
        self._conn.progressed()
        return self._file.read(size)

    def readline(self, size: int = -1) -> bytes:
        self._conn.progressed()
        return self._file.readline(size)


class WatchedCursor(psycopg2.extensions.cursor):
    def execute(self, query: Any, vars: Any = None) -> None:
        with self.connection.busy():
            super().execute(query, vars)

    def executemany(self, query: Any, vars_list: Any) -> None:
        with self.connection.busy():
            super().executemany(query, vars_list)

    def copy_expert(self, sql: Any, file: Any, size: int = 8192) -> None:
        text = sql.decode() if isinstance(sql, bytes) else str(sql)
        source = _Progress(file, self.connection) if text.rstrip().upper().endswith("FROM STDIN") else file
        with self.connection.busy():
            super().copy_expert(sql, source, size)


def watched_connection_class(probe_dsn: str, display: str, timeout_s: float,
                             connect_timeout_s: int) -> type[WatchedConnection]:
    return type("WatchedConnection", (WatchedConnection,), {
        "watch_probe_dsn": probe_dsn, "watch_display": display, "watch_timeout_s": float(timeout_s),
        "watch_connect_timeout_s": max(1, min(int(connect_timeout_s), int(PROBE_TIMEOUT_S))),
    })


def _last_data_received(sock: socket.socket) -> float | None:
    """Seconds since the kernel last received data on `sock` (Linux TCP_INFO), None if unknown."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
    except (OSError, AttributeError):
        return None
    if len(info) < _LAST_DATA_RECV + 4:
        return None
    return struct.unpack_from("I", info, _LAST_DATA_RECV)[0] / 1000.0


def probe(conn: WatchedConnection) -> str | None:
    """None when the server is working on our backend's statement (keep waiting); otherwise why the
    connection must be cut. Runs on a short connection of its own, bounded in every step."""
    holder: dict[str, Any] = {}

    def ask() -> None:
        try:
            check = psycopg2.connect(conn.watch_probe_dsn, connect_timeout=conn.watch_connect_timeout_s,
                                     application_name=PROBE_APPLICATION,
                                     options=f"-c statement_timeout={int(PROBE_TIMEOUT_S * 1000)}")
        except psycopg2.Error:
            holder["answer"] = "the server could not be reached to check on it"
            return
        holder["conn"] = check
        try:
            check.autocommit = True
            with check.cursor() as cur:
                cur.execute("SELECT state, wait_event_type FROM pg_stat_activity WHERE pid = %s",
                            (conn._backend_pid,))
                holder["row"] = cur.fetchone()
        except psycopg2.Error:
            holder["answer"] = "the server could not be asked about it"
        finally:
            check.close()

    thread = threading.Thread(target=ask, name="db-probe", daemon=True)
    thread.start()
    thread.join(PROBE_TIMEOUT_S + conn.watch_connect_timeout_s)
    if thread.is_alive():
        stuck = holder.get("conn")
        if stuck is not None:
            with contextlib.suppress(OSError, psycopg2.Error):
                socket.socket(fileno=os.dup(stuck.fileno())).shutdown(socket.SHUT_RDWR)
        return "the server did not answer a check on it either"
    if "answer" in holder:
        return str(holder["answer"])
    row = holder.get("row")
    if row is None:
        return "its server session is gone"
    state, wait_type = row
    if state == "active" and wait_type != "Client":
        return None  # running, or waiting on a lock or disk: bounded by the server's timeouts
    return "the server is waiting for us, so data was lost on the way"


class Watchdog:
    """One daemon thread for the process: checks every connection's blocked call twice a second."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: set[WatchedConnection] = set()
        self._thread: threading.Thread | None = None
        self._probing: set[WatchedConnection] = set()
        self._cuts: dict[str, tuple[float, str]] = {}

    def note_cut(self, display: str, reason: str) -> None:
        with self._lock:
            self._cuts[display] = (time.monotonic(), reason)

    def cut_reason(self, display: str) -> str | None:
        """Why a connection to `display` was cut in the last minute (consumed), for the error message
        of the call that failed because of it."""
        with self._lock:
            stamp, reason = self._cuts.pop(display, (0.0, ""))
        return reason if reason and time.monotonic() - stamp < 60 else None

    def add(self, conn: WatchedConnection) -> None:
        with self._lock:
            self._connections.add(conn)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="db-watchdog", daemon=True)
                self._thread.start()

    def discard(self, conn: WatchedConnection) -> None:
        with self._lock:
            self._connections.discard(conn)

    def _loop(self) -> None:
        while True:
            time.sleep(TICK_S)
            with contextlib.suppress(Exception):  # never let the watchdog die: the next tick tries again
                self._tick()

    def _tick(self) -> None:
        now = time.monotonic()
        with self._lock:
            candidates = [c for c in self._connections if c not in self._probing]
        for conn in candidates:
            quiet = conn.quiet_for(now)
            if quiet is not None and quiet >= conn.watch_timeout_s:
                with self._lock:
                    self._probing.add(conn)
                threading.Thread(target=self._check, args=(conn, quiet), name="db-check", daemon=True).start()

    def _check(self, conn: WatchedConnection, quiet: float) -> None:
        try:
            verdict = probe(conn)
            if verdict is None:
                conn.progressed()  # working: look again after another full timeout
            else:
                conn.abort(f"no data from {conn.watch_display} for {quiet:.0f}s and {verdict}; "
                           "connection cut (RECONCILE_NETWORK_TIMEOUT)")
        finally:
            with self._lock:
                self._probing.discard(conn)


WATCHDOG = Watchdog()
