"""SQL as values: a query travels with its parameters, bound by the driver, never spliced in."""

from __future__ import annotations

from typing import Any, NamedTuple

# Server encodings in which a text's bytes sort like its UTF-8 bytes (SQL_ASCII stores them as sent).
_UTF8_ORDERED = frozenset({"UTF8", "SQL_ASCII"})


def utf8_order(column: str, server_encoding: str) -> str:
    """An ORDER BY expression sorting `column` (a name from our code) by its UTF-8 bytes, the order
    the diff merges in. `COLLATE "C"` sorts by the server encoding's bytes: the same in UTF-8, not
    in WIN1252 (where '€' is 0x80, below 'é'), so other encodings sort their ids converted."""
    if server_encoding.upper() in _UTF8_ORDERED:
        return f'{column} COLLATE "C"'
    return f"convert_to({column}, 'UTF8')"


# The time every write stamps ("updatedAt", "createdAt"): UTC, the same for all rows of a statement.
NOW_UTC = "timezone('UTC', statement_timestamp())"


class Query(NamedTuple):
    """SQL with psycopg2 `%(name)s` placeholders and their values (literal `%` written as `%%`)."""

    sql: str
    params: dict[str, Any]
