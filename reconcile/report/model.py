"""The run report: its fields, its status and the exit code that status means.

Counts are exact; id lists are capped (`Capped`); fields a run fills only in some outcomes
(`error`, `guard`, `planned`, `lock_holder`, a hook's summary) are named here, not kept in a grab-bag.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from reconcile.actions import COUNT_KEYS, LIST_KEYS

SUCCESS = "success"
PARTIAL = "partial"
ABORTED = "aborted"
LOCKED = "locked"
FAILED = "failed"

STATUS_EXIT_CODES = {SUCCESS: 0, PARTIAL: 3, ABORTED: 5, LOCKED: 6, FAILED: 7}
COMPLETED = (SUCCESS, PARTIAL)  # the run applied (or, dry, would apply) everything it could

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


# A key of an event that only the rendering for people reads (reconcile.report.console); the JSON
# and ECS renderings drop it, so it never reaches log search or the report's documented shape.
FOR_PEOPLE = "_for_people"


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
    id_limit: int = 1000
    # What started the run: "manual" (run, plan), "schedule" (the cron), "http" (serve), and under
    # `schedule --listen`: "startup" (its first full run), "event" (a batch), "catch-up".
    trigger: str = "manual"
    event_source: str | None = None  # an event batch: the sources its ids came from ("pg", "pg,redis")
    # Filled only by some outcomes; absent from the report when None.
    error: str | None = None             # one line: why the run did not complete
    failure_exit_code: int | None = None  # a failed run's exit code when not 7 (1 internal, 2 config)
    guard: dict[str, Any] | None = None   # an aborted run: the figures that tripped the guard
    planned: dict[str, int] | None = None  # an aborted run: what it would have done
    lock_holder: dict[str, Any] | None = None  # a locked run: who holds the lock
    plan_file: dict[str, Any] | None = None    # the saved plan written (plan --out) or applied (run --plan)
    hook_summaries: dict[str, Any] = field(default_factory=dict)  # each hook's summary, under its name
    # Name, plan and status of each listed create that was not announced (a dry run, an aborted
    # run), for the console's sentences only: JSON and ECS drop it (FOR_PEOPLE).
    create_fields: dict[str, dict[str, Any]] = field(default_factory=dict)
    emitted: bool = False

    _OPTIONAL = ("guard", "planned", "lock_holder", "plan_file", "error")

    def __post_init__(self) -> None:
        for key in LIST_KEYS:
            self.lists.setdefault(key, Capped(self.id_limit))

    @property
    def exit_code(self) -> int:
        if self.status == FAILED and self.failure_exit_code is not None:
            return self.failure_exit_code
        return STATUS_EXIT_CODES[self.status]

    @property
    def completed(self) -> bool:
        return self.status in COMPLETED

    def as_dict(self) -> dict[str, Any]:
        """The report object; the event/level/timestamp/run_id keys are added by the logger."""
        body: dict[str, Any] = {"mode": self.mode, "status": self.status, "trigger": self.trigger,
                                "shard": self.shard, "total": self.total, "counts": dict(self.counts)}
        for key in LIST_KEYS:
            body[key] = list(self.lists[key])
        body["truncated"] = any(capped.truncated for capped in self.lists.values())
        body["timings_ms"] = {k: round(v, 1) for k, v in self.timings_ms.items()}
        body["source"] = self.source if self.event_source is None else {**self.source, "event": self.event_source}
        body["target"] = self.target
        body.update(self.hook_summaries)
        for key in self._OPTIONAL:
            if getattr(self, key) is not None:
                body[key] = getattr(self, key)
        if self.status == FAILED:
            body["exit_code"] = self.exit_code
        return body

    def set_databases(self, product: Any, market: Any) -> None:
        """Where the run reads and writes, as `host:port/db` (DatabaseUrl.display); counts come later."""
        self.source = {"db": product.display, "tenants": 0}
        self.target = {"db": market.display, "tenants": 0}

    def fail(self, error: str, exit_code: int = 7) -> None:
        """The run failed: nothing was written; `error` is the one line the report carries."""
        self.status = FAILED
        self.error = error
        self.failure_exit_code = exit_code

    @property
    def level(self) -> str:
        return "info" if self.status == SUCCESS else "error" if self.status == FAILED else "warning"

    def emit(self, log: Any) -> None:
        """Log the report; once only, whichever thread gets there first."""
        with _EMIT_LOCK:
            if self.emitted:
                return
            self.emitted = True
        for_people = {FOR_PEOPLE: {"created": self.create_fields}} if self.create_fields else {}
        getattr(log, self.level)("reconcile.report", **self.as_dict(), **for_people)

    def fail_unless_emitted(self, error: str, exit_code: int, log: Any) -> bool:
        """For a run that cannot finish by itself: fail and emit it, unless it already was."""
        with _EMIT_LOCK:
            if self.emitted:
                return False
        self.fail(error, exit_code)
        self.emit(log)
        return True
