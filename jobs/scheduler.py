"""`tenant-reconcile schedule`: a long-running APScheduler process that runs `run` on a cron.

One run at a time (max_instances=1), misfires coalesced within a grace time, every scheduler
event logged as JSON. SIGTERM/SIGINT: no new run starts; a run in progress gets `stop_grace_s`
to finish, then its statements are cancelled so its transaction rolls back; exit 0.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from reconcile.cancel import Cancellation
from reconcile.errors import ConfigError
from reconcile.report import Report, new_run_id
from reconcile.settings import Settings

_DOW_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_DOW_ITEM = re.compile(r"^(?P<base>\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(?P<step>\d+))?$")


def _dow_number(token: str, expr: str) -> int:
    if token.isdigit():
        number = int(token)
        if not 0 <= number <= 7:
            raise ConfigError(f"cron {expr!r}: day of week {token} is out of range (0-7, 0 and 7 are Sunday)")
        return number % 7
    if token[:3] in _DOW_NAMES and len(token) == 3:
        return _DOW_NAMES.index(token)
    raise ConfigError(f"cron {expr!r}: {token!r} is not a day of week (0-7 or sun-sat)")


def standard_day_of_week(field: str, expr: str) -> str:
    """A standard crontab day-of-week field (0/7 = Sunday, 1 = Monday) as an explicit list of
    names, which APScheduler reads unambiguously (its numbers start at Monday = 0)."""
    if field == "*":
        return field
    days: set[int] = set()
    for item in field.lower().split(","):
        match = _DOW_ITEM.match(item)
        if not match:
            raise ConfigError(f"cron {expr!r}: cannot read day of week {item!r}")
        base, step = match["base"], int(match["step"] or 1)
        if step < 1:
            raise ConfigError(f"cron {expr!r}: step must be at least 1")
        if base == "*":
            first, last = 0, 6
        elif "-" in base:
            low, high = base.split("-")
            first, last = _dow_number(low, expr), _dow_number(high, expr)
            if high == "7":
                last = 7  # 5-7 is Friday to Sunday
            if last < first:
                raise ConfigError(f"cron {expr!r}: day-of-week range {base!r} runs backwards")
        else:
            first = last = _dow_number(base, expr)
        days.update(day % 7 for day in range(first, last + 1, step))
    return ",".join(_DOW_NAMES[day] for day in sorted(days))


def parse_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"timezone {name!r} is not a known IANA time zone (e.g. UTC, Europe/Paris)") from None


def parse_cron(expr: str, timezone: ZoneInfo) -> Any:
    """A standard 5-field crontab expression as an APScheduler CronTrigger."""
    from apscheduler.triggers.cron import CronTrigger

    fields = expr.split()
    if len(fields) != 5:
        raise ConfigError(f"cron {expr!r} must have 5 fields (minute hour day-of-month month day-of-week)")
    minute, hour, day, month, dow = fields
    try:
        return CronTrigger(minute=minute, hour=hour, day=day, month=month,
                           day_of_week=standard_day_of_week(dow, expr), timezone=timezone)
    except ValueError as exc:
        raise ConfigError(f"cron {expr!r} is invalid: {exc}") from None


class ScheduledRuns:
    """Owns the scheduler, the run in progress and the shutdown sequence."""

    def __init__(self, settings: Settings, run_once: Callable[[Cancellation, str], Report], log: Any,
                 stop_grace_s: float, interval_s: float | None = None) -> None:
        from apscheduler.schedulers.blocking import BlockingScheduler

        self.settings = settings
        self.log = log
        self.stop_grace_s = stop_grace_s
        self._run_once = run_once
        self.timezone = parse_timezone(settings.schedule_timezone)
        self.trigger = parse_cron(settings.schedule_cron, self.timezone)
        if interval_s is not None:
            from apscheduler.triggers.interval import IntervalTrigger

            self.trigger = IntervalTrigger(seconds=interval_s, timezone=self.timezone)
        self.scheduler = BlockingScheduler(timezone=self.timezone)
        self._running: Cancellation | None = None
        self._idle = threading.Condition()
        self._stopping: str | None = None

    def _job(self) -> None:
        run_id = new_run_id()
        cancel = Cancellation()
        with self._idle:
            if self._stopping:
                return
            self._running = cancel
        try:
            self._run_once(cancel, run_id)
        finally:
            with self._idle:
                self._running = None
                self._idle.notify_all()

    def _on_event(self, event: Any) -> None:
        from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED

        if event.code == EVENT_JOB_ERROR:
            self.log.error("schedule.job_error", error=f"{type(event.exception).__name__}: {event.exception}")
        elif event.code == EVENT_JOB_MISSED:
            self.log.warning("schedule.missed", scheduled_for=str(event.scheduled_run_time),
                             detail="the process was not running or busy; coalesced into the next run")
        elif event.code == EVENT_JOB_MAX_INSTANCES:
            self.log.warning("schedule.skipped", scheduled_for=str(event.scheduled_run_times[-1]),
                             detail="the previous run is still going; one run at a time")
        else:
            job = self.scheduler.get_job("reconcile")
            if job is not None and job.next_run_time is not None:
                self.log.info("schedule.next", next_run=job.next_run_time.isoformat())

    def stop(self, reason: str) -> None:
        """Called from a signal handler: no new runs; let the current one finish, or cancel it."""
        if self._stopping:
            return
        self._stopping = reason
        self.log.info("schedule.stopping", reason=reason, grace_s=self.stop_grace_s)
        self.scheduler.shutdown(wait=False)

    def wait_for_run(self) -> None:
        with self._idle:
            if self._running is None:
                return
            deadline = time.monotonic() + self.stop_grace_s
            while self._running is not None and time.monotonic() < deadline:
                self._idle.wait(min(0.2, max(deadline - time.monotonic(), 0.0)))
            if self._running is not None:
                self.log.warning("schedule.cancelling_run", detail=f"still running after {self.stop_grace_s:g}s; "
                                 "its transaction is rolled back")
                self._running.cancel(f"{self._stopping}, grace period over")
            while self._running is not None:
                self._idle.wait(0.2)

    def serve(self, run_now: bool) -> None:
        from apscheduler.events import (
            EVENT_JOB_ERROR,
            EVENT_JOB_EXECUTED,
            EVENT_JOB_MAX_INSTANCES,
            EVENT_JOB_MISSED,
        )

        # Passing next_run_time=None would pause the job: give it only for --run-now.
        first = {"next_run_time": datetime.now(self.timezone)} if run_now else {}
        self.scheduler.add_job(self._job, self.trigger, id="reconcile", coalesce=True, max_instances=1,
                               misfire_grace_time=self.settings.schedule_grace_s, **first)
        self.scheduler.add_listener(self._on_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES
                                    | EVENT_JOB_EXECUTED)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _frame: self.stop(signal.Signals(signum).name))
        self.log.info("schedule.started", cron=self.settings.schedule_cron, trigger=str(self.trigger),
                      timezone=self.settings.schedule_timezone,
                      run_now=run_now, misfire_grace_s=self.settings.schedule_grace_s,
                      next_run=self.trigger.get_next_fire_time(None, datetime.now(self.timezone)).isoformat())
        self.scheduler.start()  # blocks until stop()
        self.wait_for_run()
        self.log.info("schedule.stopped", reason=self._stopping)
