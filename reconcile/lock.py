"""Single runner per target DB and shard: a session-level PostgreSQL advisory lock.

It lives in the marketplace DB, so it holds across processes and machines, and PostgreSQL drops it
when the holding session ends, so a killed run never leaves it behind.
"""

from __future__ import annotations

import hashlib
import time

import sqlalchemy as sa

from reconcile.errors import LockHeld
from reconcile.shard import Shard

LOCK_NAME = "tenant-reconcile"
_POLL_S = 0.25


def lock_key(shard: Shard) -> int:
    """A stable signed 64-bit key (what pg_advisory_lock takes) from the name and the shard."""
    digest = hashlib.sha256(f"{LOCK_NAME}:{shard.label}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def acquire(conn: sa.Connection, shard: Shard, wait_s: float = 0.0, shared: bool = False) -> int:
    """Take the lock or raise LockHeld; waits up to `wait_s` seconds, polling, when asked to.

    `shared` is for single-tenant syncs: any number may run together, but not beside a run."""
    key = lock_key(shard)
    deadline = time.monotonic() + max(wait_s, 0.0)
    try_lock = "pg_try_advisory_lock_shared" if shared else "pg_try_advisory_lock"
    while True:
        if conn.exec_driver_sql(f"SELECT {try_lock}(%s)", (key,)).scalar():
            return key
        if time.monotonic() >= deadline:
            waited = f" after waiting {wait_s:g}s" if wait_s > 0 else ""
            raise LockHeld(f"another run holds the lock for shard {shard.label}{waited}")
        time.sleep(min(_POLL_S, max(deadline - time.monotonic(), 0.0)))


def release(conn: sa.Connection, key: int, shared: bool = False) -> None:
    unlock = "pg_advisory_unlock_shared" if shared else "pg_advisory_unlock"
    conn.exec_driver_sql(f"SELECT {unlock}(%s)", (key,))
