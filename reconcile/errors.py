"""Expected failures, each tied to the exit code of SPEC §4."""

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
    exit_code = 6


class DatabaseError(ReconcileError):
    exit_code = 7
