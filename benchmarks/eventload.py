"""The product side of the event benchmark, as its own process: changes to product tenants at a
fixed rate, open loop (change i is due at start + i / rate whether or not earlier ones are done).

`python -m benchmarks.eventload CONFIG.json`. Each change is one committed transaction that bumps
`updated_at = now()`: mostly a rename of a random open tenant to a unique token `b<seq>`, some
inserts of a new tenant named `b<seq>`, a few `status = 'archived'` of a tenant that was there
before the load (an archived tenant is never touched again: its marketplace row is closed, and a
closed row takes no more changes; a tenant inserted and archived before any batch saw it is, rightly,
never written to the marketplace at all, so no write could show its delivery). With a Redis
channel, the tenant id is published after the commit, as the product application would.

Changes go to a pool of worker connections by tenant (all changes of one tenant in one worker, in
order), so a slow commit delays only its own worker's queue. One line per change is written to
the output file: `seq kind tenant_id due commit` (monotonic seconds, the clock the harness reads),
`commit` taken right after the commit returned; then one JSON summary line on stdout.
"""

from __future__ import annotations

import json
import queue
import random
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import psycopg2

ARCHIVE_SHARE = 0.02
INSERT_SHARE = 0.10
OPEN_TENANTS = ("SELECT id FROM tenants WHERE lower(btrim(coalesce(status, ''))) NOT IN ('archived', 'closed') "
                "ORDER BY id")
SQL = {
    "update": "UPDATE tenants SET name = %(name)s, updated_at = now() WHERE id = %(id)s",
    "insert": "INSERT INTO tenants (id, name, plan, status, created_at, updated_at) "
              "VALUES (%(id)s, %(name)s, 'pro', 'active', now(), now())",
    "archive": "UPDATE tenants SET status = 'archived', updated_at = now() WHERE id = %(id)s",
}


@dataclass
class Change:
    seq: int
    kind: str
    tenant_id: str
    due: float
    commit: float = 0.0
    error: str | None = None


class Pool:
    """The open tenants a change may pick, with O(1) pick and removal."""

    def __init__(self, ids: list[str], rng: random.Random) -> None:
        self.ids = ids
        self.index = {tenant_id: i for i, tenant_id in enumerate(ids)}
        self.rng = rng

    def pick(self) -> str:
        return self.ids[self.rng.randrange(len(self.ids))]

    def add(self, tenant_id: str) -> None:
        self.index[tenant_id] = len(self.ids)
        self.ids.append(tenant_id)

    def remove(self, tenant_id: str) -> None:
        i = self.index.pop(tenant_id)
        last = self.ids.pop()
        if last != tenant_id:
            self.ids[i] = last
            self.index[last] = i


@dataclass
class Worker:
    """One product connection (and Redis client) working off its own queue, in order."""

    config: dict[str, Any]
    inbox: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    done: list[Change] = field(default_factory=list)

    def run(self) -> None:
        conn = psycopg2.connect(self.config["product"], application_name="bench-load")
        publish = _publisher(self.config)
        try:
            while (change := self.inbox.get()) is not None:
                self._apply(conn, change, publish)
                self.done.append(change)
        finally:
            conn.close()

    @staticmethod
    def _apply(conn: Any, change: Change, publish: Any) -> None:
        try:
            with conn.cursor() as cur:
                cur.execute(SQL[change.kind], {"id": change.tenant_id, "name": f"b{change.seq}"})
            conn.commit()
            change.commit = time.monotonic()
        except psycopg2.Error as exc:
            conn.rollback()
            change.error = f"{type(exc).__name__}: {str(exc).strip()[:200]}"
            return
        if publish is not None:
            publish(change.tenant_id)


def _publisher(config: dict[str, Any]) -> Any:
    if not config.get("redis_url"):
        return None
    import redis

    client = redis.Redis.from_url(config["redis_url"])
    channel = config["channel"]
    return lambda tenant_id: client.publish(channel, tenant_id)


def _open_tenants(dsn: str) -> list[str]:
    conn = psycopg2.connect(dsn, application_name="bench-load")
    try:
        with conn.cursor() as cur:
            cur.execute(OPEN_TENANTS)
            return [row[0] for row in cur.fetchall()]
    finally:
        conn.close()


def _next_change(seq: int, due: float, pools: tuple[Pool, Pool], rng: random.Random) -> Change:
    """pools: (tenants an update may pick, tenants an archive may pick: those there before the load)."""
    updatable, archivable = pools
    roll = rng.random()
    if roll < ARCHIVE_SHARE and len(archivable.ids) > 1:
        tenant_id = archivable.pick()
        archivable.remove(tenant_id)
        updatable.remove(tenant_id)  # never touched again
        return Change(seq, "archive", tenant_id, due)
    if roll < ARCHIVE_SHARE + INSERT_SHARE:
        tenant_id = f"evt-{seq:09d}"
        updatable.add(tenant_id)
        return Change(seq, "insert", tenant_id, due)
    return Change(seq, "update", updatable.pick(), due)


def dispatch(config: dict[str, Any], workers: list[Worker]) -> tuple[float, float]:
    """Hand each change to its tenant's worker at its due time; (first due, last due)."""
    rng = random.Random(config.get("random_state", 1))
    existing = _open_tenants(config["product"])
    pools = (Pool(list(existing), rng), Pool(existing, rng))
    rate, total = float(config["rate"]), round(float(config["rate"]) * float(config["seconds"]))
    start = time.monotonic() + 0.05
    print(json.dumps({"first_due": start}), flush=True)  # the harness starts measuring here
    due = start
    for i in range(total):
        due = start + i / rate
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        change = _next_change(config.get("first_seq", 1) + i, due, pools, rng)
        workers[zlib.crc32(change.tenant_id.encode()) % len(workers)].inbox.put(change)
    return start, due


def main(argv: list[str]) -> int:
    with open(argv[1], encoding="utf-8") as fh:
        config = json.load(fh)
    workers = [Worker(config) for _ in range(int(config.get("workers", 8)))]
    threads = [threading.Thread(target=w.run, name=f"load-{i}", daemon=True) for i, w in enumerate(workers)]
    for thread in threads:
        thread.start()
    first_due, last_due = dispatch(config, workers)
    for worker in workers:
        worker.inbox.put(None)
    for thread in threads:
        thread.join()
    changes = sorted((c for w in workers for c in w.done), key=lambda c: c.seq)
    with open(config["out"], "w", encoding="utf-8") as out:
        for c in changes:
            if c.error is None:
                out.write(f"{c.seq}\t{c.kind}\t{c.tenant_id}\t{c.due:.6f}\t{c.commit:.6f}\n")
    errors = [c.error for c in changes if c.error]
    print(json.dumps({"sent": len(changes) - len(errors), "errors": len(errors), "first_error": errors[:1],
                      "first_due": first_due, "last_due": last_due,
                      "last_commit": max((c.commit for c in changes), default=0.0)}), flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
