"""Snapshots of both tenant tables as sorted COPY text, spooled to unlinked temp files.

Both COPYs run at once, each in its own thread: the threads only wait on the socket and append
bytes, so they overlap instead of contending for the GIL. Spooling to disk (not memory) keeps the
resident size flat whatever the tenant count; the diff then streams the two files.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import sqlalchemy as sa

from reconcile.db.copy import copy_out, dbapi, server_encoding
from reconcile.db.sql import Query, utf8_order
from reconcile.errors import DatabaseError
from reconcile.mapping import Mapping
from reconcile.tempfiles import discard, temp_file, temp_space
from reconcile.threads import Worker

# Measured at 1M tenants on 2 cores: a modest work_mem (sorted runs stream out while merging) and no
# parallel workers (the two snapshots already run at once) are ~15 % faster than a big in-memory
# sort with workers, and lighter on the servers.
SNAPSHOT_SESSION = ("SET LOCAL work_mem = '16MB'", "SET LOCAL max_parallel_workers_per_gather = 0")
COPY_BUFFER = 1 << 20


def marketplace_select_sql(where: Query, order_by: str = 'id COLLATE "C"') -> Query:
    # The trailing '' stands for the product query's error column (see Mapping.product_select_sql).
    return Query("SELECT id, name, plan::text, status::text, '' FROM \"Tenant\""
                 f" WHERE {where.sql} ORDER BY {order_by}", where.params)


@dataclass
class Spool:
    """One table's rows as COPY lines in an anonymous temp file."""

    file: IO[bytes]
    rows: int
    seconds: float

    def lines(self) -> IO[bytes]:
        with temp_space():
            self.file.seek(0)
        return self.file

    def close(self) -> None:
        discard(self.file)


@dataclass
class Snapshot:
    product: Spool
    marketplace: Spool

    def close(self) -> None:
        self.product.close()
        self.marketplace.close()


def copy_to_spool(conn: Any, query: Query) -> Spool:
    started = time.perf_counter()
    spool = temp_file(buffering=COPY_BUFFER)
    try:
        with dbapi(conn).cursor() as cur:
            for statement in SNAPSHOT_SESSION:
                cur.execute(statement)
        rows = copy_out(conn, query, spool)
        with temp_space():
            spool.flush()
    except BaseException:
        discard(spool)
        raise
    return Spool(spool, rows, time.perf_counter() - started)


def read_product(conn: sa.Connection, mapping: Mapping, where: Query, skip_ids: tuple[str, ...] = ()) -> Spool:
    """Product rows in marketplace terms; `conn` must be in a REPEATABLE READ READ ONLY transaction."""
    return copy_to_spool(conn, mapping.product_select_sql(where, skip_ids, utf8_order("id", server_encoding(conn))))


def read_marketplace(conn: sa.Connection, where: Query) -> Spool:
    return copy_to_spool(conn, marketplace_select_sql(where, utf8_order("id", server_encoding(conn))))


def in_parallel(first: Callable[[], Spool], second: Callable[[], Spool],
                stop_first: Callable[[], None], stop_second: Callable[[], None],
                join_bound_s: float) -> tuple[Spool, Spool]:
    """Run `first` in a helper thread and `second` here. When one side fails, the other is stopped at
    once (`stop_*` cut its connection: its result is no use), and the error that came first is
    raised (the other is its consequence). The helper is waited for at most `join_bound_s` (its
    own waits are bounded by the watchdog; this is the backstop), then cut."""
    order: list[str] = []
    guard = threading.Lock()

    def failed(side: str) -> bool:
        with guard:
            order.append(side)
            return len(order) == 1

    def on_first_error(_: BaseException) -> None:
        if failed("first"):
            stop_second()

    worker = Worker(first, "snapshot", on_error=on_first_error).start()
    try:
        second_value = second()
    except BaseException:
        if failed("second"):
            stop_first()
        _join(worker, join_bound_s, stop_first)
        if worker.value is not None:
            worker.value.close()
        if order[0] == "first":
            worker.result()  # raises the first side's error, the cause of ours
        raise
    try:
        _join(worker, join_bound_s, stop_first)
        return worker.result(), second_value
    except BaseException:
        second_value.close()
        raise


def _join(worker: Worker[Spool], bound_s: float, stop: Callable[[], None]) -> None:
    if not worker.join(bound_s):
        stop()
        worker.join(5.0)
        raise DatabaseError(f"the product snapshot did not end within {bound_s:g}s")
