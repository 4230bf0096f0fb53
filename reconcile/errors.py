"""Expected failures, each tied to its exit code (README: Exit codes)."""

from __future__ import annotations


class ReconcileError(Exception):
    """An expected failure: reported in one line, never with a traceback."""

    exit_code = 1


class ConfigError(ReconcileError):
    exit_code = 2


class TenantNotFound(ReconcileError):
    exit_code = 4


class GuardTripped(ReconcileError):
    exit_code = 5


class LockHeld(ReconcileError):
    """Another run holds the lock; `holder` names the oldest holder (pid, application_name, client
    address, since when) when the server could tell."""

    exit_code = 6

    def __init__(self, message: str, holder: dict[str, object] | None = None, holders: int = 0) -> None:
        super().__init__(message)
        self.holder = holder
        self.holders = holders


class DatabaseError(ReconcileError):
    exit_code = 7


class CommitInDoubt(DatabaseError):
    """The connection was lost during COMMIT and whether the server committed could not be found
    out: the one failure after which "nothing written" cannot be promised."""
