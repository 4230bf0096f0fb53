"""Inbound address tokens: 6 characters of [a-z0-9] from `secrets`, drawn in bulk, unbiased."""

from __future__ import annotations

import secrets
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
