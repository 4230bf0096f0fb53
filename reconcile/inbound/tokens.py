"""Inbound address tokens: 6 characters of [a-z0-9] from `secrets`, drawn in bulk, unbiased; and the
ids of new inbound rows."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

TOKEN_ALPHABET = b"abcdefghijklmnopqrstuvwxyz0123456789"
TOKEN_LENGTH = 6

# 252 = 7 * 36: dropping bytes >= 252 leaves every alphabet letter equally likely.
_TOKEN_TABLE = bytes(TOKEN_ALPHABET[b % 36] if b < 252 else 0 for b in range(256))
_TOKEN_DROP = bytes(range(252, 256))


def tokens(count: int) -> Iterator[bytes]:
    """`count` tokens of 6 characters from [a-z0-9], drawn from `secrets` in bulk."""
    need = count * TOKEN_LENGTH
    pool = b""
    while len(pool) < need:
        pool += secrets.token_bytes(need - len(pool) + 16).translate(_TOKEN_TABLE, _TOKEN_DROP)
    for start in range(0, need, TOKEN_LENGTH):
        yield pool[start:start + TOKEN_LENGTH]


def row_id_sql(rank: str) -> str:
    """The SQL of a new inbound row's id: 32 hexadecimal characters, like a UUID without dashes, made
    of 12 for the milliseconds since the epoch and 12 random ones (both bound as `%(id_prefix)s`,
    one per statement: `id_prefix()`), then 8 for `rank`, the row's rank within its statement.

    Unique (the rank within a statement, 48 random bits between statements of the same millisecond)
    and increasing within a statement and over time, so a backfill of millions of rows appends to
    the primary key's index, and the foreign-key checks of the addresses find their connections in
    order, instead of touching pages all over both (random UUIDs: more than twice as slow)."""
    return f"%(id_prefix)s || lpad(to_hex({rank}), 8, '0')"


def id_prefix() -> str:
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(6)}"
