"""The plan: the diff stream folded into exact counts and per-action spools, before anything is written.

Like a Terraform plan it is a value: it can be counted, guarded, printed (as a dry-run report) and
then applied. Actions are spooled to temp files as COPY lines ready for the apply's temp tables,
so a plan of ten million creates costs disk, not memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

from reconcile import copytext
from reconcile.diff import (
    ARCHIVE,
    CREATE,
    ERR,
    ERROR,
    ID,
    NAME,
    ORPHAN,
    PLAN,
    SKIP,
    STATUS,
    UNCHANGED,
    UPDATE,
    Action,
)
from reconcile.mapping import (
    CLOSED,
    INVALID_ID,
    INVALID_NAME,
    INVALID_PLAN,
    INVALID_STATUS,
    MAX_ID_LENGTH,
    MAX_NAME_LENGTH,
    slug_for,
)
from reconcile.tempfiles import discard, spooled_file

_SPOOL_IN_MEMORY = 4 << 20
_CLOSED = CLOSED.encode()


class ActionSpool:
    """COPY lines of one action kind, with their count; in memory until 4 MB, then on disk."""

    def __init__(self) -> None:
        self.file: IO[bytes] = spooled_file(_SPOOL_IN_MEMORY)
        self.count = 0
        self._read = False

    def add(self, line: bytes) -> None:
        if self._read:  # appending after a read (late row errors): back to the end first
            self.file.seek(0, 2)
            self._read = False
        self.file.write(line)
        self.count += 1

    def rewind(self) -> IO[bytes]:
        self.file.seek(0)
        self._read = True
        return self.file

    def rows(self) -> Iterator[list[bytes]]:
        """Escaped fields of every spooled line."""
        for line in self.rewind():
            yield line[:-1].split(b"\t")

    def close(self) -> None:
        discard(self.file)


# Spool layouts (one temp table each in reconcile.apply):
#   creates:  id, slug, name, plan, status
#   updates:  id, name, plan, status (as read), new_name, new_plan, new_status
#   archives: id, name, plan, status (as read), orphan (t/f)
#   errors:   id, error, detail
@dataclass
class Plan:
    total: int = 0               # product tenants in scope
    target_total: int = 0        # marketplace tenants in scope
    unchanged: int = 0
    orphans: int = 0
    orphan_ids: list[str] = field(default_factory=list)  # capped, for the report
    orphan_spool: ActionSpool = field(default_factory=ActionSpool)  # every orphan id, one per line
    skipped: int = 0             # tenants on the skip list (product tenants and orphans)
    skipped_ids: list[str] = field(default_factory=list)  # capped, for the report
    creates: ActionSpool = field(default_factory=ActionSpool)
    updates: ActionSpool = field(default_factory=ActionSpool)
    archives: ActionSpool = field(default_factory=ActionSpool)
    errors: ActionSpool = field(default_factory=ActionSpool)
    rejected: set[str] = field(default_factory=set)  # creates turned into slug_conflict errors

    @property
    def create_count(self) -> int:
        return self.creates.count - len(self.rejected)

    @property
    def writes(self) -> int:
        return self.create_count + self.updates.count + self.archives.count

    def reject_create(self, tenant_id: str, error_line: bytes) -> None:
        """A planned create that cannot be applied (found while staging): now a row error."""
        if tenant_id not in self.rejected:
            self.rejected.add(tenant_id)
            self.errors.add(error_line)

    def close(self) -> None:
        for spool in (self.creates, self.updates, self.archives, self.errors, self.orphan_spool):
            spool.close()


def error_detail(p: list[bytes]) -> str:
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


# How many actions go by between two looks at a stop request (a diff of millions of rows takes seconds).
_CHECK_EVERY = 1 << 16


def build_plan(actions: Iterable[Action], *, orphans_mode: str, id_limit: int,
               check: Callable[[], None] | None = None) -> Plan:
    """Fold the diff stream into a Plan. `orphans_mode` is 'report' or 'archive'; `check` is
    called now and then and may raise to stop (a SIGTERM during a long diff)."""
    plan = Plan()
    archive_orphans = orphans_mode == "archive"
    for seen, action in enumerate(actions):
        if check is not None and seen % _CHECK_EVERY == 0:
            check()
        kind = action[0]
        if kind == UNCHANGED:
            plan.unchanged += action[1]
        elif kind == CREATE:
            p = action[1]
            slug = copytext.encode(slug_for(copytext.decode(p[ID])))
            plan.creates.add(copytext.line([p[ID], slug, p[NAME], p[PLAN], p[STATUS]]))
        elif kind == UPDATE:
            p, m = action[1], action[2]
            plan.updates.add(copytext.line([m[ID], m[NAME], m[PLAN], m[STATUS], p[NAME], p[PLAN], p[STATUS]]))
        elif kind == ARCHIVE:
            m = action[2]
            plan.archives.add(copytext.line([m[ID], m[NAME], m[PLAN], m[STATUS], b"f"]))
        elif kind == ERROR:
            p = action[1]
            plan.errors.add(copytext.line([p[ID], p[ERR], copytext.encode(error_detail(p))]))
        elif kind == SKIP:
            plan.skipped += 1
            if len(plan.skipped_ids) < id_limit:
                plan.skipped_ids.append(copytext.decode(action[1][ID]))
        elif kind == ORPHAN:
            m = action[1]
            plan.orphans += 1
            plan.orphan_spool.add(m[ID] + b"\n")
            if len(plan.orphan_ids) < id_limit:
                plan.orphan_ids.append(copytext.decode(m[ID]))
            if archive_orphans and m[STATUS] != _CLOSED:
                plan.archives.add(copytext.line([m[ID], m[NAME], m[PLAN], m[STATUS], b"t"]))
        else:  # pragma: no cover - the diff yields only the kinds above
            raise ValueError(f"unknown action {kind!r}")
    return plan
