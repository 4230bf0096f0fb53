"""Temp files in the one directory the run spools to, and a named error when it cannot.

Snapshots and plans are spooled to disk so memory stays flat. The directory is `$TMPDIR` when set
(used as given: an operator who points it at a volume must not be silently moved to another
disk), else the system default. A directory that is full, read-only or missing is an expected
failure (exit 7) naming the directory and the OS error, not an internal error.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import IO

from reconcile.errors import DatabaseError


class TempSpaceError(DatabaseError):
    """The temp directory cannot hold the run's spool files; nothing was written (exit 7)."""


def temp_dir() -> str:
    return os.environ.get("TMPDIR") or tempfile.gettempdir()


@contextmanager
def local_io(what: str, hint: str = "") -> Iterator[None]:
    """Turn an OS error of local file I/O in the block into an expected failure (exit 7) naming
    `what` (a directory, a file) and the OS error, never an internal error."""
    try:
        yield
    except OSError as exc:
        detail = exc.strerror or type(exc).__name__
        raise TempSpaceError(f"{what}: {detail}{f' ({hint})' if hint else ''}") from exc


@contextmanager
def temp_space() -> Iterator[None]:
    """Turn an OS error of temp-file I/O in the block into a TempSpaceError naming the directory."""
    with local_io(f"temp directory {temp_dir()}", "set TMPDIR to a directory with room for the snapshots"):
        yield


def temp_file(buffering: int = -1) -> IO[bytes]:
    """An anonymous temp file (gone when closed, or when the process dies)."""
    with temp_space():
        return tempfile.TemporaryFile(dir=temp_dir(), buffering=buffering)


def spooled_file(max_size: int) -> IO[bytes]:
    """In memory up to `max_size` bytes, then a temp file (errors of the rollover are named too)."""
    return tempfile.SpooledTemporaryFile(max_size=max_size, dir=temp_dir())


def discard(file: IO[bytes]) -> None:
    """Close a temp file whose content is no longer wanted. Closing flushes its buffer, which fails
    again on a full disk: that must not replace the error already being reported."""
    with suppress(OSError):
        file.close()
