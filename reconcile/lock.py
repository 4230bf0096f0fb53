"""Single runner per target DB and shard: session-level PostgreSQL advisory locks.

They live in the marketplace DB, so they hold across processes and machines, and PostgreSQL drops
them when the holding session ends, so a killed run never leaves one behind.

Two levels, so that a whole run never overlaps any part of itself:
- a whole run (`0/1`) holds the whole-run key exclusively;
- a shard run holds the whole-run key shared, then its own shard key exclusively: the N shards of
  an Indexed Job run at once, but none of them beside a whole run;
- a single-tenant `sync` holds the whole-run key shared: syncs run side by side, never beside a
  whole run.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from reconcile.errors import LockHeld
from reconcile.shard import Shard

LOCK_NAME = "tenant-reconcile"
_POLL_S = 0.25


def lock_key(shard: Shard) -> int:
    """A stable signed 64-bit key (what pg_advisory_lock takes) from the name and the shard."""
    digest = hashlib.sha256(f"{LOCK_NAME}:{shard.label}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@dataclass(frozen=True)
class Held:
    key: int
    shared: bool


def _needed(shard: Shard, sync: bool) -> list[Held]:
    whole = lock_key(Shard())
    if sync:
        return [Held(whole, True)]
    if shard.whole:
        return [Held(whole, False)]
    return [Held(whole, True), Held(lock_key(shard), False)]


def acquire(conn: sa.Connection, shard: Shard, wait_s: float = 0.0, sync: bool = False,
            check: Callable[[], None] | None = None) -> list[Held]:
    """Take the run's locks or raise LockHeld (holding none); waits up to `wait_s` seconds in all,
    polling, when asked to. `check` runs before every attempt and may raise to stop waiting (a
    SIGTERM must not sit out a long --wait-lock, nor take the lock afterwards)."""
    deadline = time.monotonic() + max(wait_s, 0.0)
    held: list[Held] = []
    try:
        for lock in _needed(shard, sync):
            try_lock = "pg_try_advisory_lock_shared" if lock.shared else "pg_try_advisory_lock"
            while True:
                if check is not None:
                    check()
                if conn.exec_driver_sql(f"SELECT {try_lock}(%s)", (lock.key,)).scalar():
                    held.append(lock)
                    break
                if time.monotonic() >= deadline:
                    waited = f" after waiting {wait_s:g}s" if wait_s > 0 else ""
                    holder = "a whole run (0/1)" if lock.shared else "another run"
                    raise LockHeld(f"{holder} holds the lock for shard {shard.label}{waited}")
                time.sleep(min(_POLL_S, max(deadline - time.monotonic(), 0.0)))
    except BaseException:
        with contextlib.suppress(sa.exc.DBAPIError):  # the session is gone, and its locks with it
            release(conn, held)
        raise
    return held


def release(conn: sa.Connection, held: list[Held]) -> None:
    for lock in reversed(held):
        unlock = "pg_advisory_unlock_shared" if lock.shared else "pg_advisory_unlock"
        conn.exec_driver_sql(f"SELECT {unlock}(%s)", (lock.key,))
