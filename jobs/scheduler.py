"""`tenant-reconcile schedule`: a long-running APScheduler process that runs `run` on a cron.

One run at a time (max_instances=1), misfires coalesced within a grace time, every scheduler
event logged as JSON. SIGTERM/SIGINT (jobs.process.StopSignal): no new run starts; a run in
progress gets `stop_grace_s` to finish, then its statements are cancelled so its transaction
rolls back; exit 0. The main thread does the logging and the scheduler shutdown, never the signal
handler.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jobs.process import RunSlot, StopSignal
from reconcile.db.cancel import Cancellation
from reconcile.errors import ConfigError
from reconcile.report.model import Report, new_run_id
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
    """A standard 5-field crontab expression as an APScheduler trigger.

    Standard cron (Vixie, POSIX): when both day-of-month and day-of-week are restricted (neither
    starts with `*`, as Vixie cron and cronie decide it, so `*/2` counts as unrestricted), a day
    matching EITHER fires; APScheduler's CronTrigger would require both, so that
    case is an OrTrigger of one CronTrigger per day field. A cron that matches no date at all
    (e.g. `0 2 31 2 *`) is a ConfigError."""
    from apscheduler.triggers.combining import OrTrigger
    from apscheduler.triggers.cron import CronTrigger

    fields = expr.split()
    if len(fields) != 5:
        raise ConfigError(f"cron {expr!r} must have 5 fields (minute hour day-of-month month day-of-week)")
    minute, hour, day, month, dow = fields
    day_of_week = standard_day_of_week(dow, expr)
    common: dict[str, Any] = {"minute": minute, "hour": hour, "month": month, "timezone": timezone}
    try:
        if not day.startswith("*") and not dow.startswith("*"):
            trigger: Any = OrTrigger([CronTrigger(day=day, **common), CronTrigger(day_of_week=day_of_week, **common)])
        else:
            trigger = CronTrigger(day=day, day_of_week=day_of_week, **common)
    except ValueError as exc:
        raise ConfigError(f"cron {expr!r} is invalid: {exc}") from None
    if trigger.get_next_fire_time(None, datetime.now(timezone)) is None:
        raise ConfigError(f"cron {expr!r} never fires: no date matches its day of month and month")
    return trigger


class ScheduledRuns:
    """Owns the scheduler, the run in progress and the shutdown sequence."""

    def __init__(self, settings: Settings, run_once: Callable[[Cancellation, str], Report], log: Any,
                 interval_s: float | None = None, listener: Any = None) -> None:
        self._stop = StopSignal().install()  # a signal since the process started counts (jobs.process)
        from apscheduler.schedulers.background import BackgroundScheduler

        self.settings = settings
        self.log = log
        self.stop_grace_s = settings.schedule_stop_grace_s
        self._run_once = run_once
        self.timezone = parse_timezone(settings.schedule_timezone)
        self.trigger = parse_cron(settings.schedule_cron, self.timezone)
        if interval_s is not None:
            from apscheduler.triggers.interval import IntervalTrigger

            self.trigger = IntervalTrigger(seconds=interval_s, timezone=self.timezone)
        # In its own thread: the main thread stays free to wait for the stop and carry it out.
        self.scheduler = BackgroundScheduler(timezone=self.timezone)
        self.slot = RunSlot(lambda: self._stop.requested, log)
        self.listener = listener
        self.metrics_server: Any = None  # jobs.metrics.MetricsServer, listening until the process stops

    def healthy(self) -> bool:
        """/healthz: the scheduler is running and no stop has been asked for."""
        return bool(self.scheduler.running) and not self._stop.requested

    def _job(self) -> None:
        self.slot.run(lambda cancel: self._run_once(cancel, new_run_id()))

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

    def serve(self, run_now: bool) -> None:
        """Until SIGTERM/SIGINT: no new runs then; let the current one finish, or cancel it."""
        from apscheduler.events import (
            EVENT_JOB_ERROR,
            EVENT_JOB_EXECUTED,
            EVENT_JOB_MAX_INSTANCES,
            EVENT_JOB_MISSED,
        )

        try:
            # Passing next_run_time=None would pause the job: give it only for --run-now.
            first = {"next_run_time": datetime.now(self.timezone)} if run_now else {}
            self.scheduler.add_job(self._job, self.trigger, id="reconcile", coalesce=True, max_instances=1,
                                   misfire_grace_time=self.settings.schedule_grace_s, **first)
            self.scheduler.add_listener(self._on_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED
                                        | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_EXECUTED)
            next_run = self.trigger.get_next_fire_time(None, datetime.now(self.timezone))
            self.log.info("schedule.started", cron=self.settings.schedule_cron, trigger=str(self.trigger),
                          timezone=self.settings.schedule_timezone,
                          run_now=run_now, misfire_grace_s=self.settings.schedule_grace_s,
                          next_run=next_run.isoformat() if next_run is not None else None)
            if not self._stop.requested:  # a stop before this point: never start at all
                self.scheduler.start()
                if self.listener is not None:
                    self.listener.start(self.slot, lambda: self._stop.requested)
            self._stop.wait()
            reason = self._stop.name
            self.log.info("schedule.stopping", reason=reason, grace_s=self.stop_grace_s)
            if self.scheduler.running:
                self.scheduler.shutdown(wait=False)
            self.slot.finish(reason, self.stop_grace_s)
            if self.listener is not None:
                self.listener.join()
            self.log.info("schedule.stopped", reason=reason)
        finally:
            if self.metrics_server is not None:
                self.metrics_server.stop()
            self._stop.close()
