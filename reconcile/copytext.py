"""PostgreSQL COPY text format: one line per row, tab between fields, backslash escapes.

Rows travel as these lines from COPY TO to the diff and from the plan to COPY FROM, so the common
case (no escapes) never builds a Python object per field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

NULL = b"\\N"
_UNESCAPES = {b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"v": b"\v", b"\\": b"\\"}
_UNESCAPE_RE = re.compile(rb"\\(.)", re.S)
_ESCAPE_RE = re.compile(rb"[\\\t\n\r\b\f\v]")
_ESCAPES = {b"\\": b"\\\\", b"\t": b"\\t", b"\n": b"\\n", b"\r": b"\\r", b"\b": b"\\b", b"\f": b"\\f",
            b"\v": b"\\v"}


def unescape(field: bytes) -> bytes:
    """Decode one COPY text field (COPY TO never emits octal or hex escapes)."""
    if b"\\" not in field:
        return field
    return _UNESCAPE_RE.sub(lambda m: _UNESCAPES.get(m.group(1), m.group(1)), field)


def escape(value: bytes) -> bytes:
    return _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group(0)], value)


def decode(field: bytes) -> str:
    return unescape(field).decode("utf-8")


def value(field: bytes) -> str | None:
    """A field as Python: None for NULL (a marketplace column may hold NULL where NOT NULL was dropped)."""
    return None if field == NULL else decode(field)


def encode(value: str) -> bytes:
    return escape(value.encode("utf-8"))


def line(fields: Sequence[bytes]) -> bytes:
    """Join already-escaped fields into one COPY line."""
    return b"\t".join(fields) + b"\n"


def line_of(values: Iterable[str | None]) -> bytes:
    """One COPY line from Python strings (None is NULL)."""
    return line([NULL if v is None else encode(v) for v in values])
