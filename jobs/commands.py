"""The commands as plain functions: what `run`, `plan`, `sync`, `status`, `init-db` and each scheduled
or HTTP-triggered run do, given settings. The CLI (jobs.cli), the scheduler and the HTTP server only
parse their input, call these, and shape the answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from jobs.process import run_until_stopped
from reconcile.db.cancel import Cancellation
from reconcile.hooks import AfterWrite
from reconcile.metrics import push_report
from reconcile.pipeline.run import RunOptions, run_reconcile
from reconcile.preflight import Preflight, preflight
from reconcile.report.file import write_report_file
from reconcile.report.logs import get_logger
from reconcile.report.model import Report, new_run_id
from reconcile.settings import Settings

if TYPE_CHECKING:
    from jobs.metrics import ScheduleMetrics
    from jobs.scheduler import ScheduledRuns
    from reconcile.pipeline.planfile import SavedPlan
    from reconcile.single import SyncOutcome, TenantStatus


def hooks_for(settings: Settings, countries: tuple[str, ...] | None = None) -> tuple[AfterWrite, ...]:
    """The hooks a run gets from its settings: the inbound addresses when countries are set."""
    if not (settings.inbound_countries if countries is None else countries):
        return ()  # and the inbound package is not even imported (start-up time of plan and run)
    from reconcile.inbound import inbound_hook

    hook = inbound_hook(settings, countries)
    return (hook,) if hook is not None else ()


def new_report(settings: Settings, dry_run: bool, run_id: str | None = None, trigger: str = "manual") -> Report:
    return Report(run_id=run_id or new_run_id(), mode="dry-run" if dry_run else "apply", shard=settings.shard.label,
                  id_limit=settings.report_id_limit, trigger=trigger)


@dataclass(frozen=True)
class RunRequest:
    """What a reconcile command asks for, beyond the settings."""

    dry_run: bool = False
    force: bool = False
    report_file: str | None = None
    only: tuple[str, ...] | None = None    # restrict to these tenants (every rule of a full run)
    plan_out: str | None = None            # a dry run also saves its plan there
    saved_plan: SavedPlan | None = None    # apply exactly this plan
    # `run` and `plan` take --allow-empty-source; the guard's advice says to rerun with it, or else
    # (schedule, serve) to apply once with `run --allow-empty-source`.
    takes_allow_empty_source: bool = False


def reconcile_once(settings: Settings, request: RunRequest = RunRequest(), *, cancel: Cancellation | None = None,
                   report: Report | None = None) -> Report:
    """One reconcile run as `run`, `plan`, each scheduled run and HTTP `sync-all` do it: the report
    on stdout, then the report file and the Pushgateway when asked for. Never raises for an
    expected failure: the report says what happened."""
    report = report or new_report(settings, request.dry_run)
    log = get_logger(run_id=report.run_id)
    saved = request.saved_plan
    options = RunOptions(dry_run=request.dry_run, force=request.force, cancel=cancel,
                         tenant_ids=saved.only if saved else request.only, plan_out=request.plan_out,
                         saved_plan=saved, hooks=() if saved else hooks_for(settings),
                         takes_allow_empty_source=request.takes_allow_empty_source)
    report = run_reconcile(settings, options, log, report)
    if request.report_file:
        write_report_file(report, request.report_file, log)
    if settings.pushgateway and not request.dry_run:
        push_report(settings.pushgateway, report, log)
    return report


BATCH_WAIT_LOCK_S = 5.0  # an event batch waits this long for a full run's lock, then is retried later


def reconcile_event_batch(settings: Settings, ids: tuple[str, ...], source: str, cancel: Cancellation) -> Report:
    """One batch of `schedule --listen`: `run --only` with the batch's ids (every rule of a full run,
    per-tenant locks), its report marked `"trigger": "event"` and the sources. Never pushed to a
    Pushgateway (several a second would only overwrite the night's figures)."""
    report = new_report(settings, False, trigger="event")
    report.event_source = source
    batch_settings = replace(settings, pushgateway=None, wait_lock_s=max(settings.wait_lock_s, BATCH_WAIT_LOCK_S))
    return reconcile_once(batch_settings, RunRequest(only=ids), cancel=cancel, report=report)


def reconcile_until_stopped(settings: Settings, request: RunRequest) -> Report:
    """`reconcile_once` for a one-shot command: SIGTERM/SIGINT stop it (rolled back, reported),
    and a run that does not stop in time is reported as failed by the process itself."""
    report = new_report(settings, request.dry_run)

    def overdue(message: str) -> None:
        log = get_logger(run_id=report.run_id)
        if report.fail_unless_emitted(message, 7, log) and request.report_file:
            write_report_file(report, request.report_file, log)

    return run_until_stopped(lambda cancel: reconcile_once(settings, request, cancel=cancel, report=report),
                             on_overdue=overdue)


def saved_plan_for(settings: Settings, path: str, max_age_s: float) -> SavedPlan:
    """The saved plan at `path`, checked against these settings (exit 2 when it was made for other
    databases, another shard or mapping, or is too old)."""
    from reconcile.pipeline import planfile

    expected = planfile.header("", settings.require_product().display, settings.require_marketplace().display,
                               settings.shard.label, None, settings.mapping)
    return planfile.load_plan_file(path, expected, max_age_s)


def sync_until_stopped(settings: Settings, tenant_id: str, country: str | None,
                       answer: Callable[[SyncOutcome], None]) -> SyncOutcome:
    """`sync TENANT_ID`: one tenant, its inbound address for `country` unless None. Raises
    TenantNotFound (exit 4) before any run. A sync that does not stop in time is reported as failed
    by the process itself, which gives `answer` that outcome before it exits."""
    from reconcile.single import SyncOutcome, sync_report, sync_tenant

    report = sync_report(settings)
    log: Any = get_logger(run_id=report.run_id)

    def overdue(message: str) -> None:
        if report.fail_unless_emitted(message, 7, log.bind(tenant_id=tenant_id)) or not report.completed:
            answer(SyncOutcome(report))

    return run_until_stopped(lambda cancel: sync_tenant(settings, tenant_id, country, log, cancel, report),
                             on_overdue=overdue)


def status(settings: Settings, tenant_id: str) -> TenantStatus:
    """`status TENANT_ID`: read-only, no lock. SIGTERM/SIGINT stop it (Cancelled, exit 7)."""
    from reconcile.single import tenant_status

    return run_until_stopped(lambda cancel: tenant_status(settings, tenant_id, cancel))


def check(settings: Settings) -> Preflight:
    """`check`: the read-only preflight. SIGTERM/SIGINT stop it (Cancelled, exit 7)."""
    return run_until_stopped(lambda cancel: preflight(settings, cancel))


def scheduled_runs(settings: Settings, report_file: str | None, interval_s: float | None = None) -> ScheduledRuns:
    """`schedule`: the cron's full runs and, with `settings.listen`, the event listener, sharing one
    run slot and one stop; with `settings.metrics_port`, every run and event recorded and served on
    /metrics (the port is opened here, before any run: one in use is exit 2)."""
    from jobs.events.listener import Listener
    from jobs.scheduler import ScheduledRuns

    metrics = schedule_metrics(settings)

    def observed(report: Report) -> Report:
        if metrics is not None:
            metrics.record_run(report)
        return report

    def full_run(trigger: str, cancel: Cancellation, run_id: str | None = None) -> Report:
        return observed(reconcile_once(settings, RunRequest(report_file=report_file), cancel=cancel,
                                       report=new_report(settings, False, run_id, trigger=trigger)))

    listener = None
    if settings.listen:
        if "redis" in settings.listen:
            settings.require_redis()
        listener = Listener(settings, get_logger(), lambda batch, cancel: observed(reconcile_event_batch(
            settings, batch.ids, batch.source, cancel)), full_run, metrics=metrics)
    runs = ScheduledRuns(settings, lambda cancel, run_id: full_run("schedule", cancel, run_id),
                         get_logger(component="schedule"), interval_s, listener=listener)
    if metrics is not None:  # only when a metrics port is set
        from jobs.metrics import MetricsServer

        runs.metrics_server = MetricsServer(metrics.registry, runs.healthy).start(settings.metrics_host,
                                                                                  settings.metrics_port)
    return runs


def schedule_metrics(settings: Settings) -> ScheduleMetrics | None:
    """The metrics of a `schedule` process when it serves them: the series of every trigger and
    event source it can produce."""
    if settings.metrics_port is None:
        return None
    from jobs.metrics import ScheduleMetrics

    triggers = ("schedule", "startup", "catch-up", "event") if settings.listen else ("schedule",)
    return ScheduleMetrics(triggers, settings.listen)
