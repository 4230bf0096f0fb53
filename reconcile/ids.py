"""What a tenant id given by a caller (HTTP body or path, command-line argument) must look like
before it is used to look a tenant up or to sync it.

The check runs before anything touches a database: a NUL or an unpaired surrogate cannot be sent
to PostgreSQL at all (the driver raises), and an id longer than any valid tenant id can only be a
mistake. Messages never repeat the value: it came from outside, may be huge or unprintable, and
ends up in logs and HTTP answers.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_TENANT_ID_LENGTH = 128  # the longest id the marketplace accepts (a longer one is a row error)


def tenant_id_problem(value: object, *, name: str = "tenantId") -> str | None:
    """None when `value` is acceptable as a tenant id to look up or sync, else a short message
    that starts with `name` (e.g. "tenantId must be at most 128 characters")."""
    if value is None:
        return f"{name} is required"
    if not isinstance(value, str):
        return f"{name} must be a string"
    if not value.strip():
        return f"{name} is required"
    if len(value) > MAX_TENANT_ID_LENGTH:
        return f"{name} must be at most {MAX_TENANT_ID_LENGTH} characters"
    if "\x00" in value:
        return f"{name} must not contain a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: from "\ud800" in JSON, or invalid UTF-8 bytes in argv
        return f"{name} must be valid UTF-8 text"
    return None


def id_list(values: Iterable[str], where: str) -> tuple[str, ...]:
    """The ids of `--only` (or of an id file): each checked as above, duplicates dropped, sorted
    bytewise (the order the snapshots use). Raises ConfigError naming `where` (and the line)."""
    from reconcile.errors import ConfigError

    seen: set[str] = set()
    for number, value in enumerate(values, 1):
        problem = tenant_id_problem(value, name=f"{where}: id {number}")
        if problem:
            raise ConfigError(problem)
        seen.add(value)
    if not seen:
        raise ConfigError(f"{where} names no tenant id")
    return tuple(sorted(seen, key=lambda i: i.encode()))


def read_id_file(path: str) -> tuple[str, ...]:
    """One id a line (surrounding spaces and blank lines ignored), streamed: a list of 100,000 ids
    costs their strings, not a copy of the file."""
    from reconcile.errors import ConfigError

    where = f"--only-file {path}"
    try:
        with open(path, encoding="utf-8") as lines:
            return id_list((line.strip() for line in lines if line.strip()), where)
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where} is not UTF-8 text") from None


__all__ = ["MAX_TENANT_ID_LENGTH", "id_list", "read_id_file", "tenant_id_problem"]
