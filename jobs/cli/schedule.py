"""`schedule`: the long-running process that runs `run` on a cron."""

from __future__ import annotations

from typing import Any

import click

from jobs.cli.common import (
    EPILOG,
    PUSHGATEWAY_OPTION,
    expected_errors,
    load_with_databases,
    reconcile_options,
    settings_options,
)


@click.command(epilog=EPILOG)
@settings_options
@reconcile_options
@click.option("--cron", "schedule_cron", default=None, metavar="EXPR",
              help="Standard 5-field crontab; 0 and 7 are Sunday (default: '0 2 * * *').")
@click.option("--timezone", "schedule_timezone", default=None, metavar="TZ",
              help="IANA time zone of the cron (default: UTC).")
@click.option("--run-now", is_flag=True, help="Also run once right away.")
@click.option("--stop-grace", "schedule_stop_grace_s", type=float, default=None, metavar="SECONDS",
              help="On SIGTERM, let a run in progress finish this long before rolling it back (default 5).")
@click.option("--wait-lock", "wait_lock_s", type=float, default=None, metavar="SECONDS",
              help="Each run waits up to SECONDS for another run's lock.")
@PUSHGATEWAY_OPTION
# Hidden: lets tests and smoke checks see the loop fire repeatedly without waiting for a minute.
@click.option("--interval-seconds", type=click.FloatRange(min=0.1), default=None, hidden=True)
@click.pass_context
@expected_errors
def schedule(ctx: click.Context, run_now: bool, report_file: str | None, interval_seconds: float | None,
             **flags: Any) -> None:
    """Run `run` on a cron schedule, one run at a time, until SIGTERM/SIGINT (then exit 0)."""
    from jobs.commands import RunRequest, new_report, reconcile_once
    from jobs.scheduler import ScheduledRuns
    from reconcile.report.logs import get_logger

    settings = load_with_databases(ctx, flags, report_file)
    runs = ScheduledRuns(settings, lambda cancel, run_id: reconcile_once(
        settings, RunRequest(report_file=report_file), cancel=cancel, report=new_report(settings, False, run_id)),
        get_logger(component="schedule"), settings.schedule_stop_grace_s, interval_seconds)
    runs.serve(run_now)
