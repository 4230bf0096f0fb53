"""The one way data moves in bulk: COPY, in both directions, with every value bound by the driver.

A COPY cannot take server-side parameters, so a query's values are bound by psycopg2 itself
(`mogrify`, which quotes for the session's encoding and standard_conforming_strings): no value is
ever spliced into SQL by hand. Rows stay in COPY text format end to end (reconcile.copytext).
"""

from __future__ import annotations

from typing import IO, Any

from reconcile.db.sql import Query
from reconcile.tempfiles import temp_space

BUFFER = 1 << 20


def dbapi(conn: Any) -> Any:
    """The psycopg2 connection under a SQLAlchemy Connection (or the psycopg2 connection itself)."""
    inner = getattr(conn, "connection", None)
    return inner.dbapi_connection if inner is not None else conn


def server_encoding(conn: Any) -> str:
    """The server encoding of the database behind `conn` (reported by the server at connect)."""
    return dbapi(conn).info.parameter_status("server_encoding") or "UTF8"


def copy_out(conn: Any, query: Query, sink: IO[bytes]) -> int:
    """`COPY (query) TO STDOUT` into `sink`; the number of rows."""
    with dbapi(conn).cursor() as cur:
        statement = b"COPY (" + cur.mogrify(query.sql, query.params) + b") TO STDOUT"
        with temp_space():
            cur.copy_expert(statement, sink, size=BUFFER)
        return int(cur.rowcount)


def copy_in(conn: Any, table: str, source: IO[bytes]) -> None:
    """`COPY table FROM STDIN` from `source` (COPY text lines). `table` is a name from our code."""
    with dbapi(conn).cursor() as cur, temp_space():
        cur.copy_expert(f"COPY {table} FROM STDIN", source, size=BUFFER)
