"""What a tenant id given by a caller (HTTP body or path, command-line argument) must look like
before it is used to look a tenant up or to sync it.

The check runs before anything touches a database: a NUL or an unpaired surrogate cannot be sent
to PostgreSQL at all (the driver raises), and an id longer than any valid tenant id can only be a
mistake. Messages never repeat the value: it came from outside, may be huge or unprintable, and
ends up in logs and HTTP answers.
"""

from __future__ import annotations

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


__all__ = ["MAX_TENANT_ID_LENGTH", "tenant_id_problem"]
