"""SQL as values: a query travels with its parameters, bound by the driver, never spliced in."""

from __future__ import annotations

from typing import Any, NamedTuple

# The time every write stamps ("updatedAt", "createdAt"): UTC, the same for all rows of a statement.
NOW_UTC = "timezone('UTC', statement_timestamp())"


class Query(NamedTuple):
    """SQL with psycopg2 `%(name)s` placeholders and their values (literal `%` written as `%%`)."""

    sql: str
    params: dict[str, Any]
