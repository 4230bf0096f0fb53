"""The run report (SPEC §5): exact counts, capped id lists, per-action events, atomic report file."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from reconcile import copytext
from reconcile.apply import Outcome
from reconcile.errors import ConfigError
from reconcile.logs import utc_timestamp
from reconcile.plan import Plan

SUCCESS = "success"
PARTIAL = "partial"
ABORTED = "aborted"
LOCKED = "locked"
FAILED = "failed"

STATUS_EXIT_CODES = {SUCCESS: 0, PARTIAL: 3, ABORTED: 5, LOCKED: 6, FAILED: 7}
COUNT_KEYS = ("created", "updated", "archived", "unchanged", "orphans", "conflicts", "errors", "skipped",
              "inbound_created", "inbound_errors")
LIST_KEYS = ("created", "updated", "archived", "orphans", "conflicts", "errors", "skipped")
_FIELDS = ("name", "plan", "status")


_EMIT_LOCK = threading.Lock()


def new_run_id() -> str:
    return uuid.uuid4().hex


class Capped(list):
    """A list that keeps its first `limit` items and remembers whether it dropped any."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.truncated = False

    def add(self, item: Any) -> None:
        if len(self) < self.limit:
            self.append(item)
        else:
            self.truncated = True


@dataclass
class Report:
    run_id: str
    mode: str  # "apply" | "dry-run"
    shard: str = "0/1"
    status: str = SUCCESS
    total: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_KEYS, 0))
    lists: dict[str, Capped] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=lambda: {"snapshot": 0.0, "diff": 0.0, "apply": 0.0,
                                                                 "total": 0.0})
    source: dict[str, Any] = field(default_factory=dict)
    target: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    id_limit: int = 1000
    emitted: bool = False

    def __post_init__(self) -> None:
        for key in LIST_KEYS:
            self.lists.setdefault(key, Capped(self.id_limit))

    @property
    def exit_code(self) -> int:
        return STATUS_EXIT_CODES[self.status]

    def as_dict(self) -> dict[str, Any]:
        """The report object; the event/level/timestamp/run_id keys are added by the logger."""
        body: dict[str, Any] = {
            "mode": self.mode,
            "status": self.status,
            "shard": self.shard,
            "total": self.total,
            "counts": dict(self.counts),
        }
        for key in LIST_KEYS:
            body[key] = list(self.lists[key])
        body["truncated"] = any(capped.truncated for capped in self.lists.values())
        body["timings_ms"] = {k: round(v, 1) for k, v in self.timings_ms.items()}
        body["source"] = self.source
        body["target"] = self.target
        body.update(self.extra)
        return body

    def set_databases(self, product: Any, market: Any) -> None:
        """Where the run reads and writes, as `host:port/db` (DatabaseUrl.display); counts come later."""
        self.source = {"db": product.display, "tenants": 0}
        self.target = {"db": market.display, "tenants": 0}

    def add_inbound_error(self, tenant_id: str, error: str, detail: str, log: Any) -> None:
        """A row error of the inbound step: listed with the others (scope "inbound"), counted apart,
        because the tenant itself was applied."""
        self.counts["inbound_errors"] += 1
        self.lists["errors"].add({"id": tenant_id, "error": error, "detail": detail, "scope": "inbound"})
        log.warning("tenant.error", tenant_id=tenant_id, error=error, detail=detail, scope="inbound")

    def fail(self, error: str, exit_code: int) -> None:
        """The run failed: nothing was written; `error` is the one line the report carries."""
        self.status = FAILED
        self.extra["error"] = error
        self.extra["exit_code"] = exit_code

    @property
    def level(self) -> str:
        return "info" if self.status == SUCCESS else "error" if self.status == FAILED else "warning"

    def emit(self, log: Any) -> None:
        """Log the report; once only, whichever thread gets there first."""
        with _EMIT_LOCK:
            if self.emitted:
                return
            self.emitted = True
        getattr(log, self.level)("reconcile.report", **self.as_dict())

    def fail_unless_emitted(self, error: str, exit_code: int, log: Any) -> bool:
        """For a run that cannot finish by itself: fail and emit it, unless it already was."""
        with _EMIT_LOCK:
            if self.emitted:
                return False
        self.fail(error, exit_code)
        self.emit(log)
        return True

    def write_file(self, path: str | os.PathLike[str], log: Any) -> None:
        """The same object as the stdout event, atomically: a temp file in the same directory (mode
        from the umask, like any file the job writes), fsync, rename."""
        document = {"event": "reconcile.report", "level": self.level, "timestamp": utc_timestamp(),
                    "run_id": self.run_id, **self.as_dict()}
        target = Path(path)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(orjson.dumps(document, default=str, option=orjson.OPT_INDENT_2) + b"\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        except OSError as exc:
            log.error("report.file_failed", path=str(target), error=exc.strerror or str(exc))


def check_report_path(path: str | os.PathLike[str]) -> None:
    """Before the run, so a bad --report-file is a configuration error (exit 2), not a report
    lost after the work is done. Creates missing parent directories, as the write would."""
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"--report-file {str(target)!r} is a directory")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--report-file {str(target)!r}: cannot create its directory "
                          f"({exc.strerror or exc})") from None
    if not os.access(target.parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--report-file {str(target)!r}: directory {str(target.parent)!r} is not writable")


def _changes(row: list[bytes]) -> dict[str, list[str]]:
    """[old, new] per differing field of an update spool row (old = marketplace as read)."""
    out: dict[str, list[str]] = {}
    for i, name in enumerate(_FIELDS):
        old, new = row[1 + i], row[4 + i]
        if old != new:
            out[name] = [copytext.value(old), copytext.value(new)]
    return out


def _ids(rows: Iterable[list[bytes]]) -> Iterable[tuple[str, list[bytes]]]:
    for row in rows:
        yield copytext.decode(row[0]), row


def tally(report: Report, plan: Plan, outcome: Outcome | None, log: Any) -> None:
    """Fill counts and lists from the plan minus what the writes could not apply.

    With `outcome` None (a dry run) the counts are what would be done and no action events are
    logged; row errors are logged in both modes because they are findings, not actions."""
    applied = outcome is not None
    conflicts = outcome.conflicts if outcome else {"create": set(), "update": set(), "archive": set()}
    lists, counts = report.lists, report.counts

    for tenant_id, row in _ids(plan.creates.rows()):
        if tenant_id in plan.rejected:
            continue
        if tenant_id in conflicts["create"]:
            lists["conflicts"].add(tenant_id)
            log.warning("tenant.conflict", tenant_id=tenant_id, action="create",
                        detail="a tenant with this id or slug appeared in the marketplace during the run")
            continue
        counts["created"] += 1
        lists["created"].add(tenant_id)
        if applied:
            log.info("tenant.created", tenant_id=tenant_id, name=copytext.decode(row[2]),
                     plan=row[3].decode(), status=row[4].decode())

    for tenant_id, row in _ids(plan.updates.rows()):
        if tenant_id in conflicts["update"]:
            lists["conflicts"].add(tenant_id)
            log.warning("tenant.conflict", tenant_id=tenant_id, action="update",
                        detail="the marketplace row changed during the run")
            continue
        changes = _changes(row)
        counts["updated"] += 1
        lists["updated"].add({"id": tenant_id, "changes": changes})
        if applied:
            log.info("tenant.updated", tenant_id=tenant_id, changes=changes)

    for tenant_id, row in _ids(plan.archives.rows()):
        if tenant_id in conflicts["archive"]:
            lists["conflicts"].add(tenant_id)
            log.warning("tenant.conflict", tenant_id=tenant_id, action="archive",
                        detail="the marketplace row changed during the run")
            continue
        counts["archived"] += 1
        lists["archived"].add(tenant_id)
        if applied:
            log.info("tenant.archived", tenant_id=tenant_id, previous_status=copytext.value(row[3]),
                     orphan=row[4] == b"t")

    for tenant_id, row in _ids(plan.errors.rows()):
        error, detail = row[1].decode(), copytext.decode(row[2])
        lists["errors"].add({"id": tenant_id, "error": error, "detail": detail})
        log.warning("tenant.error", tenant_id=tenant_id, error=error, detail=detail)

    for tenant_id in plan.orphan_ids:
        lists["orphans"].add(tenant_id)
    if plan.orphans > len(plan.orphan_ids):
        lists["orphans"].truncated = True
    for tenant_id in plan.skipped_ids:
        lists["skipped"].add(tenant_id)
    if plan.skipped > len(plan.skipped_ids):
        lists["skipped"].truncated = True

    counts["unchanged"] = plan.unchanged
    counts["orphans"] = plan.orphans
    counts["errors"] = plan.errors.count
    counts["skipped"] = plan.skipped
    counts["conflicts"] = outcome.count if outcome else 0
    report.total = plan.total
    if counts["errors"] or counts["conflicts"] or counts["inbound_errors"]:
        report.status = PARTIAL
