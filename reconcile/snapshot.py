"""Snapshots of both tenant tables as sorted COPY text, spooled to unlinked temp files.

Both COPYs run at once, each in its own thread: the threads only wait on the socket and append
bytes, so they overlap instead of contending for the GIL. Spooling to disk (not memory) keeps the
resident size flat whatever the tenant count; the diff then streams the two files.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import sqlalchemy as sa

from reconcile.mapping import Mapping

# Measured at 1M tenants on 2 cores: a modest work_mem (sorted runs stream out while merging) and no
# parallel workers (the two snapshots already run at once) are ~15 % faster than a big in-memory
# sort with workers, and lighter on the servers.
SNAPSHOT_SESSION = ("SET LOCAL work_mem = '16MB'", "SET LOCAL max_parallel_workers_per_gather = 0")
COPY_BUFFER = 1 << 20


def marketplace_select_sql(where: str = "TRUE") -> str:
    # The trailing '' stands for the product query's error column (see Mapping.product_select_sql).
    return (
        "SELECT id, name, plan::text, status::text, '' FROM \"Tenant\""
        f' WHERE {where} ORDER BY id COLLATE "C"'
    )


@dataclass
class Spool:
    """One table's rows as COPY lines in an anonymous temp file."""

    file: IO[bytes]
    rows: int
    seconds: float

    def lines(self) -> IO[bytes]:
        self.file.seek(0)
        return self.file

    def close(self) -> None:
        self.file.close()


@dataclass
class Snapshot:
    product: Spool
    marketplace: Spool

    def close(self) -> None:
        self.product.close()
        self.marketplace.close()


def copy_to_spool(dbapi_conn: Any, select_sql: str) -> Spool:
    started = time.perf_counter()
    spool = tempfile.TemporaryFile(buffering=COPY_BUFFER)
    try:
        with dbapi_conn.cursor() as cur:
            for statement in SNAPSHOT_SESSION:
                cur.execute(statement)
            cur.copy_expert(f"COPY ({select_sql}) TO STDOUT", spool)
            rows = cur.rowcount
        spool.flush()
    except BaseException:
        spool.close()
        raise
    return Spool(spool, rows, time.perf_counter() - started)


def read_product(conn: sa.Connection, mapping: Mapping, where: str) -> Spool:
    """Product rows in marketplace terms; `conn` must be in a REPEATABLE READ READ ONLY transaction."""
    return copy_to_spool(conn.connection.dbapi_connection, mapping.product_select_sql(where))


def read_marketplace(conn: sa.Connection, where: str) -> Spool:
    return copy_to_spool(conn.connection.dbapi_connection, marketplace_select_sql(where))


def in_parallel(first: Callable[[], Spool], second: Callable[[], Spool]) -> tuple[Spool, Spool]:
    """Run `first` in a helper thread and `second` here; re-raise the first error seen."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = first()
        except BaseException as exc:  # handed to the calling thread below
            result["error"] = exc

    thread = threading.Thread(target=target, name="snapshot", daemon=True)
    thread.start()
    try:
        second_value = second()
    except BaseException:
        thread.join()
        if "value" in result:
            result["value"].close()
        raise
    thread.join()
    if "error" in result:
        second_value.close()
        raise result["error"]
    return result["value"], second_value
