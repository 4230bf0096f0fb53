"""The plan: the diff stream folded into exact counts and per-kind spools, before anything is written.

Like a Terraform plan it is a value: once built it is only read, to be counted, guarded, staged,
printed (as a dry-run report) and applied. Actions are spooled to temp files as COPY lines in
their kind's layout (reconcile.actions), so a plan of ten million creates costs disk, not memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

from reconcile import actions, copytext
from reconcile.actions import ARCHIVE, BY_NAME, ORPHAN, SKIP, SPOOLED, UNCHANGED, Kind, Row
from reconcile.mapping import (
    CLOSED,
    INVALID_ID,
    INVALID_NAME,
    INVALID_PLAN,
    INVALID_STATUS,
    MAX_ID_LENGTH,
    MAX_NAME_LENGTH,
    SKIPPED,
    slug_for,
)
from reconcile.pipeline.diff import ERR, ID, NAME, PLAN, STATUS, Action
from reconcile.tempfiles import discard, spooled_file

_SPOOL_IN_MEMORY = 4 << 20
_CLOSED = CLOSED.encode()
_SKIPPED = SKIPPED.encode()
# How many actions go by between two looks at a stop request (a diff of millions of rows takes seconds).
_CHECK_EVERY = 1 << 16


class ActionSpool:
    """COPY lines of one kind, with their count; in memory until 4 MB, then on disk. Written while
    the plan is built, then only read."""

    def __init__(self) -> None:
        self.file: IO[bytes] = spooled_file(_SPOOL_IN_MEMORY)
        self.count = 0

    def add(self, line: bytes) -> None:
        self.file.write(line)
        self.count += 1

    def rewind(self) -> IO[bytes]:
        self.file.seek(0)
        return self.file

    def rows(self) -> Iterator[Row]:
        """Escaped fields of every spooled line."""
        for line in self.rewind():
            yield line[:-1].split(b"\t")

    def close(self) -> None:
        discard(self.file)


@dataclass
class Plan:
    total: int = 0         # product tenants in scope
    target_total: int = 0  # marketplace tenants in scope
    unchanged: int = 0
    # Orphans on the skip list: counted in `skipped` like skipped product tenants, so the report's
    # `total` counts them too and its counts add up (reported_total).
    skipped_orphans: int = 0
    spools: dict[str, ActionSpool] = field(default_factory=lambda: {kind.name: ActionSpool() for kind in SPOOLED})

    def spool(self, kind: Kind) -> ActionSpool:
        return self.spools[kind.name]

    def count(self, kind: Kind) -> int:
        return self.unchanged if kind is UNCHANGED else self.spools[kind.name].count

    @property
    def reported_total(self) -> int:
        """The report's `total`: every tenant counted in exactly one of created, updated, archived
        (not orphans), unchanged, errors, conflicts and skipped."""
        return self.total + self.skipped_orphans

    def close(self) -> None:
        for spool in self.spools.values():
            spool.close()


def error_detail(p: Row) -> str:
    code = p[ERR].decode()
    if code == INVALID_PLAN:
        return f"plan {copytext.decode(p[PLAN])!r} has no mapping"
    if code == INVALID_STATUS:
        return f"status {copytext.decode(p[STATUS])!r} has no mapping"
    if code == INVALID_NAME:
        if p[NAME] == copytext.NULL:
            return "name is NULL"
        name = copytext.decode(p[NAME])
        if len(name) > MAX_NAME_LENGTH:
            return f"name has {len(name)} characters (at most {MAX_NAME_LENGTH})"
        return "name is empty after trimming"
    if code == INVALID_ID:
        length = len(copytext.decode(p[ID]))
        return "id is empty" if length == 0 else f"id has {length} characters (at most {MAX_ID_LENGTH})"
    return code


# A diff action -> the spool row of its kind (layouts in reconcile.actions).
_ROWS: dict[str, Callable[[Action], Row]] = {
    actions.CREATE.name: lambda a: [a[1][ID], copytext.encode(slug_for(copytext.decode(a[1][ID]))), a[1][NAME],
                                    a[1][PLAN], a[1][STATUS]],
    actions.UPDATE.name: lambda a: [*a[2][ID:ERR], *a[1][NAME:ERR]],
    actions.ARCHIVE.name: lambda a: [*a[2][ID:ERR], b"f"],
    actions.ERROR.name: lambda a: [a[1][ID], a[1][ERR], copytext.encode(error_detail(a[1]))],
    actions.ORPHAN.name: lambda a: [a[1][ID]],
    actions.SKIP.name: lambda a: [a[1][ID]],
}
assert set(_ROWS) == {kind.name for kind in SPOOLED}, "every spooled kind needs its row here"


def build_plan(stream: Iterable[Action], *, orphans_mode: str, check: Callable[[], None] | None = None) -> Plan:
    """Fold the diff stream into a Plan. `orphans_mode` is 'report' or 'archive'; `check` is
    called now and then and may raise to stop (a SIGTERM during a long diff)."""
    plan = Plan()
    archive_orphans = orphans_mode == "archive"
    for seen, action in enumerate(stream):
        if check is not None and seen % _CHECK_EVERY == 0:
            check()
        kind = BY_NAME[action[0]]
        if kind is UNCHANGED:
            plan.unchanged += action[1]
            continue
        plan.spools[kind.name].add(copytext.line(_ROWS[kind.name](action)))
        if kind is SKIP and action[1][ERR] != _SKIPPED:  # an orphan (marketplace fields) on the skip list
            plan.skipped_orphans += 1
        if kind is ORPHAN and archive_orphans and action[1][STATUS] != _CLOSED:
            plan.spool(ARCHIVE).add(copytext.line([*action[1][ID:ERR], b"t"]))
    return plan
