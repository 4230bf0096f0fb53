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

from reconcile.errors import DatabaseError
from reconcile.mapping import Mapping
from reconcile.pgcopy import Query, copy_out, dbapi
from reconcile.tempfiles import discard, temp_file, temp_space

# Measured at 1M tenants on 2 cores: a modest work_mem (sorted runs stream out while merging) and no
# parallel workers (the two snapshots already run at once) are ~15 % faster than a big in-memory
# sort with workers, and lighter on the servers.
SNAPSHOT_SESSION = ("SET LOCAL work_mem = '16MB'", "SET LOCAL max_parallel_workers_per_gather = 0")
COPY_BUFFER = 1 << 20


def marketplace_select_sql(where: Query) -> Query:
    # The trailing '' stands for the product query's error column (see Mapping.product_select_sql).
    return Query("SELECT id, name, plan::text, status::text, '' FROM \"Tenant\""
                 f' WHERE {where.sql} ORDER BY id COLLATE "C"', where.params)


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
    return copy_to_spool(conn, mapping.product_select_sql(where, skip_ids))


def read_marketplace(conn: sa.Connection, where: Query) -> Spool:
    return copy_to_spool(conn, marketplace_select_sql(where))


def in_parallel(first: Callable[[], Spool], second: Callable[[], Spool],
                stop_first: Callable[[], None], stop_second: Callable[[], None],
                join_bound_s: float) -> tuple[Spool, Spool]:
    """Run `first` in a helper thread and `second` here. When one side fails, the other is stopped at
    once (`stop_*` cut its connection: its result is no use), and the error that came first is
    raised (the other is its consequence). The helper is waited for at most `join_bound_s` (its
    own waits are bounded by the watchdog; this is the backstop), then cut."""
    result: dict[str, Any] = {}
    failed_first: list[str] = []
    guard = threading.Lock()

    def failed(side: str) -> bool:
        with guard:
            failed_first.append(side)
            return len(failed_first) == 1

    def target() -> None:
        try:
            result["value"] = first()
        except BaseException as exc:  # handed to the calling thread below
            result["error"] = exc
            if failed("first"):
                stop_second()

    thread = threading.Thread(target=target, name="snapshot", daemon=True)
    thread.start()
    try:
        second_value = second()
    except BaseException:
        if failed("second"):
            stop_first()
        _join(thread, join_bound_s, stop_first)
        if "value" in result:
            result["value"].close()
        if failed_first[0] == "first":
            raise result["error"] from None
        raise
    try:
        _join(thread, join_bound_s, stop_first)
    except BaseException:
        second_value.close()
        raise
    if "error" in result:
        second_value.close()
        raise result["error"]
    return result["value"], second_value


def _join(thread: threading.Thread, bound_s: float, stop: Callable[[], None]) -> None:
    thread.join(bound_s)
    if thread.is_alive():
        stop()
        thread.join(5.0)
        raise DatabaseError(f"the product snapshot did not end within {bound_s:g}s")
