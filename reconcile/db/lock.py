"""Single runner per target DB and shard: session-level PostgreSQL advisory locks.

They live in the marketplace DB, so they hold across processes and machines, and PostgreSQL drops
them when the holding session ends, so a killed run never leaves one behind.

Who may run beside whom:
- a whole run (`0/1`) holds the whole-run key exclusively: it runs beside nothing;
- a shard run holds the whole-run key shared and its own shard key exclusively: the N shards of
  an Indexed Job run at once, none of them beside a whole run;
- a single-tenant writer (`sync`, HTTP /sync, a run restricted to some ids) holds the whole-run key
  shared: any number run side by side (serialized per tenant by transaction locks, see
  `lock_tenants`), never beside a whole run;
- shard runs and single-tenant writers exclude each other as groups: each group holds its own
  group key shared and checks, by a momentary exclusive try, that the other group's key is free.
  (A shard run does not serialize per tenant, so a sync beside it could add a second inbound row
  where the unique constraints are missing.)

Every attempt takes all the keys or none, so two waiting runs never hold a part each.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from reconcile.errors import LockHeld
from reconcile.shard import Shard

LOCK_NAME = "tenant-reconcile"
_POLL_S = 0.25
_SHARD_RUNS = "group:shard-runs"
_SINGLE_WRITERS = "group:single-tenant-writers"


def lock_key(shard: Shard) -> int:
    """A stable signed 64-bit key (what pg_advisory_lock takes) from the name and the shard."""
    return _key(shard.label)


@dataclass(frozen=True)
class Held:
    key: int
    shared: bool
    what: str = "another run"  # who holds it when it cannot be taken, for the message
    probe_only: bool = False   # taken and released at once: only proves that nobody holds it


def _needed(shard: Shard, single: bool) -> list[Held]:
    whole = lock_key(Shard())
    if single:
        return [Held(whole, True, "a whole run (0/1)"), Held(_key(_SINGLE_WRITERS), True),
                Held(_key(_SHARD_RUNS), False, "a sharded run", probe_only=True)]
    if shard.whole:
        return [Held(whole, False)]
    return [Held(whole, True, "a whole run (0/1)"), Held(lock_key(shard), False),
            Held(_key(_SHARD_RUNS), True), Held(_key(_SINGLE_WRITERS), False, "a sync", probe_only=True)]


# Without --wait-lock a held lock is tried for this long before exit 6: the backend of a run that
# was just killed notices its client is gone within client_connection_check_interval and drops
# its locks, and an immediate rerun must not fail because of a dead holder.
SETTLE_S = 1.0


def acquire(conn: sa.Connection, shard: Shard, wait_s: float = 0.0, single: bool = False,
            cancel: Any = None) -> list[Held]:
    """Take the run's locks or raise LockHeld (holding none, naming the holder); waits up to
    `wait_s` seconds in all (at least SETTLE_S), polling. `cancel` (a Cancellation) is checked
    before every attempt and wakes the waits: a SIGTERM must not sit out a long --wait-lock, nor
    take the lock afterwards."""
    deadline = time.monotonic() + max(wait_s, SETTLE_S)
    while True:
        if cancel is not None:
            cancel.check()
        held, refused = _attempt(conn, _needed(shard, single))
        if refused is None:
            return held
        if time.monotonic() >= deadline:
            raise _held_error(conn, refused, shard, wait_s)
        pause = min(_POLL_S, max(deadline - time.monotonic(), 0.0))
        if cancel is not None:
            cancel.wait(pause)
        else:
            time.sleep(pause)


def _attempt(conn: sa.Connection, needed: list[Held]) -> tuple[list[Held], Held | None]:
    """All of `needed`, or none of them and the first one refused."""
    held: list[Held] = []
    try:
        for lock in needed:
            try_lock = "pg_try_advisory_lock_shared" if lock.shared else "pg_try_advisory_lock"
            if not conn.exec_driver_sql(f"SELECT {try_lock}(%s)", (lock.key,)).scalar():
                release(conn, held)
                return [], lock
            if lock.probe_only:
                release(conn, [lock])
            else:
                held.append(lock)
    except BaseException:
        with contextlib.suppress(Exception):  # the session may be gone, and its locks with it
            release(conn, held)
        raise
    return held, None


_HOLDERS = """
SELECT a.pid, a.application_name, host(a.client_addr) AS client_addr, a.client_port,
       to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS since
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid::bigint = %s AND l.objid::bigint = %s AND l.pid <> pg_backend_pid()
ORDER BY a.backend_start NULLS LAST, l.pid"""


def holders(conn: sa.Connection, key: int) -> list[dict[str, Any]]:
    """Who holds the advisory lock `key`, oldest first (pid, application_name, client, since). `since` is
    when the holder's session began (backend_start): PostgreSQL records no time for a granted lock, and
    a run takes its lock right after connecting."""
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    rows = conn.exec_driver_sql(_HOLDERS, (unsigned >> 32, unsigned & 0xFFFFFFFF)).mappings().all()
    return [{"pid": r["pid"], "application_name": r["application_name"] or None,
             "client_addr": r["client_addr"] or "local socket", "since": r["since"]} for r in rows]


def _held_error(conn: sa.Connection, lock: Held, shard: Shard, wait_s: float) -> LockHeld:
    waited = f" after waiting {wait_s:g}s" if wait_s > 0 else ""
    what = lock.what
    try:
        found = holders(conn, lock.key)
    except sa.exc.DBAPIError:
        found = []
    if not found:
        return LockHeld(f"{what} holds the lock for shard {shard.label}{waited}")
    first = found[0]
    more = f" and {len(found) - 1} more" if len(found) > 1 else ""
    return LockHeld(f"{what} holds the lock for shard {shard.label}{waited}: pid {first['pid']} "
                    f"({first['application_name'] or 'no application_name'}) from {first['client_addr']} "
                    f"connected since {first['since']}{more}", holder=first, holders=len(found))


def release(conn: sa.Connection, held: list[Held]) -> None:
    if conn.invalidated or conn.closed:
        return  # the session is gone, and its locks with it; using it again would reconnect
    for lock in reversed(held):
        unlock = "pg_advisory_unlock_shared" if lock.shared else "pg_advisory_unlock"
        conn.exec_driver_sql(f"SELECT {unlock}(%s)", (lock.key,))


# A restricted run takes one transaction lock per tenant up to this many tenants; beyond, it takes
# the run lock exclusively instead (PostgreSQL's lock table holds max_locks_per_transaction x
# max_connections entries, 6,400 by default, shared by every session).
MAX_TENANT_LOCKS = 1000


def tenant_keys(tenant_ids: tuple[str, ...]) -> list[int]:
    """Transaction-lock keys serializing the writers of these tenants, sorted: one per slug a create
    would take. The slug is a function of the id, so one key serializes both the writers of one
    tenant and those of two new ids wanting the same slug (`a_b` and `a-b`)."""
    from reconcile.mapping import slug_for

    return sorted({_key(f"slug:{slug_for(i)}") for i in tenant_ids})


def _key(name: str) -> int:
    digest = hashlib.sha256(f"{LOCK_NAME}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_tenants(conn: sa.Connection, tenant_ids: tuple[str, ...]) -> None:
    """Serialize single-tenant writers (`sync`, HTTP /sync, restricted runs) per tenant, until the
    end of the caller's transaction: concurrent syncs of one tenant run one after the other, so the
    second finds the first one's rows instead of creating them again (with or without the unique
    constraints). Keys are taken in sorted order, so overlapping sets never deadlock; the wait is
    bounded by lock_timeout."""
    conn.exec_driver_sql("SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT unnest(%(keys)s::bigint[]) AS k "
                         "ORDER BY 1) AS keys", {"keys": tenant_keys(tenant_ids)})
