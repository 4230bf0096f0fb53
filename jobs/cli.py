"""The `tenant-reconcile` command line. Exit codes are listed in EPILOG; stdout carries JSON lines only."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from reconcile.errors import ConfigError, ReconcileError
from reconcile.settings import LOG_FORMATS, ORPHAN_MODES, Settings, load_settings

EPILOG = """\b
Exit codes: 0 success · 1 internal error · 2 usage/configuration · 3 partial (row errors or
conflicts) · 4 tenant not found · 5 safety guard · 6 lock held · 7 database failure.
Connection settings: PRODUCT_DATABASE_URL, MARKETPLACE_DATABASE_URL (or *_FILE; the marketplace
falls back to DATABASE_URL). Every setting: flag > environment > config file > default."""


def fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr, no traceback, and the exit code."""
    click.echo(f"tenant-reconcile: {message}", err=True)
    sys.exit(code)


def settings_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options every command that reads settings accepts, after the command name."""
    options = [
        click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
                     help="TOML config file (default: $RECONCILE_CONFIG)."),
        click.option("--log-format", type=click.Choice(LOG_FORMATS), default=None,
                     help="json (default), console for humans, ecs for Elasticsearch."),
        click.option("--product-url", default=None, metavar="URL",
                     help="Product DB URL (default: $PRODUCT_DATABASE_URL)."),
        click.option("--marketplace-url", default=None, metavar="URL",
                     help="Marketplace DB URL (default: $MARKETPLACE_DATABASE_URL, else $DATABASE_URL)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def load(ctx: click.Context, flags: dict[str, Any],
         url_flags: tuple[str, str] = Settings.url_flags) -> Settings:
    """Settings for this invocation, with logging configured; a bad config exits 2 here."""
    from reconcile.logs import configure_logging

    root = ctx.find_root().params
    config_file = flags.pop("config_file", None) or root.get("config_file")
    if flags.get("log_format") is None:
        flags["log_format"] = root.get("log_format")
    try:
        settings = load_settings(config_file=config_file, flags=flags, url_flags=url_flags)
    except ConfigError as exc:
        fail(f"configuration error: {exc}")
    configure_logging(settings.log_format)
    return settings


def load_with_databases(ctx: click.Context, flags: dict[str, Any], report_file: str | None = None) -> Settings:
    """`load`, for a command that talks to both databases: both URLs, and a usable --report-file,
    are checked here, before anything connects (exit 2)."""
    from reconcile.report import check_report_path

    settings = load(ctx, flags)
    settings.require_product()
    settings.require_marketplace()
    if report_file:
        check_report_path(report_file)
    return settings


def expected_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Map expected failures to one stderr line and their exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            fail(f"configuration error: {exc}", exc.exit_code)
        except ReconcileError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except Exception as exc:
            if os.environ.get("RECONCILE_DEBUG"):
                raise
            from reconcile.db import scrub_credentials

            fail(f"internal error: {type(exc).__name__}: {scrub_credentials(str(exc)).splitlines()[0]}"
                 " (set RECONCILE_DEBUG=1 for a traceback)", 1)

    return wrapper


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"],
                                              "max_content_width": 100})
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="TOML config file (default: $RECONCILE_CONFIG).")
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default=None,
              help="json (default), console for humans, ecs for Elasticsearch.")
@click.version_option(package_name="tenant-reconcile")
def cli(config_file: str | None, log_format: str | None) -> None:
    """Keep the marketplace DB's tenants in step with the product DB (the source of truth).

    Snapshots both tables, computes a diff, applies create/update/archive in one transaction and
    prints one JSON report (event "reconcile.report") on stdout."""


def reconcile_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--orphans", type=click.Choice(ORPHAN_MODES), default=None,
                     help="Marketplace tenants absent from product: report (default) or archive."),
        click.option("--ensure-inbound", "inbound_countries", default=None, metavar="CC,..",
                     help="Also ensure Amazon inbound addresses for these countries (e.g. FR,DE)."),
        click.option("--max-archive", type=int, default=None, metavar="N",
                     help="Safety guard: abort when more than N tenants would be archived (default 500)."),
        click.option("--max-archive-ratio", type=float, default=None, metavar="R",
                     help="Safety guard: abort when at least 10 archives are also more than this share "
                          "(0..1) of the marketplace tenants (default 0.10)."),
        click.option("--skip", "skip_ids", default=None, metavar="ID,..",
                     help="Leave these tenants untouched (counted as skipped); replaces "
                          "$RECONCILE_SKIP_IDS and reconcile.skip_ids."),
        click.option("--shard", default=None, metavar="I/N",
                     help="Only tenants with int(md5(id)[:8],16) % N == I "
                          "(default: $JOB_COMPLETION_INDEX/$RECONCILE_SHARD_COUNT)."),
        click.option("--report-file", type=click.Path(dir_okay=False), default=None, metavar="PATH",
                     help="Also write the report object to PATH (atomically)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def new_report(settings: Settings, run_id: str, dry_run: bool) -> Any:
    from reconcile.report import Report

    return Report(run_id=run_id, mode="dry-run" if dry_run else "apply", shard=settings.shard.label,
                  id_limit=settings.report_id_limit)


def allow_empty_source_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """A flag of one invocation only (`run`, `plan`): never in the environment, the config file or a
    long-running `schedule`, where it would also let through the night the product URL is wrong."""
    return click.option(
        "--allow-empty-source", is_flag=True, default=None,
        help="Let the run proceed although the product snapshot is empty while the marketplace is "
             "not (normally a wrong URL or a failed restore; --force does not lift this).")(func)


def run_and_report(settings: Settings, *, dry_run: bool, force: bool, report_file: str | None,
                   cancel: Any, run_id: str, report: Any = None) -> Any:
    """One reconcile run as `run`, `plan` and each scheduled run do it: report on stdout, then the
    report file and the Pushgateway when asked for."""
    from reconcile.inbound import inbound_hook
    from reconcile.logs import get_logger
    from reconcile.metrics import push_report
    from reconcile.reconciler import RunOptions, run_reconcile

    log = get_logger(run_id=run_id)
    report = report or new_report(settings, run_id, dry_run)
    options = RunOptions(dry_run=dry_run, force=force, after_write=inbound_hook(settings), cancel=cancel)
    report = run_reconcile(settings, options, log, report)
    if report_file:
        report.write_file(report_file, log)
    if settings.pushgateway and not dry_run:
        push_report(settings.pushgateway, report, log)
    return report


def finish(report: Any) -> NoReturn:
    """Exit with the run's code; a run that did not complete also says why in one stderr line
    (stdout stays JSON only), so a terminal or a Job's events show it without parsing the report."""
    from reconcile.reconciler import exit_code_of
    from reconcile.report import PARTIAL, SUCCESS

    code = exit_code_of(report)
    if report.status not in (SUCCESS, PARTIAL):
        error = report.extra.get("error", report.status)
        click.echo(f"tenant-reconcile: {'configuration error: ' if code == 2 else ''}{error}", err=True)
    sys.exit(code)


def _reconcile(ctx: click.Context, *, dry_run: bool, force: bool, report_file: str | None,
               flags: dict[str, Any]) -> NoReturn:
    from jobs.signals import run_cancellable
    from reconcile.logs import get_logger
    from reconcile.report import new_run_id

    settings = load_with_databases(ctx, flags, report_file)
    run_id = new_run_id()
    report = new_report(settings, run_id, dry_run)

    def overdue(message: str) -> None:  # the run is stuck after a signal: report for it, then exit 7
        if report.fail_unless_emitted(message, 7, get_logger(run_id=run_id)) and report_file:
            report.write_file(report_file, get_logger(run_id=run_id))

    report = run_cancellable(lambda cancel: run_and_report(settings, dry_run=dry_run, force=force,
                                                           report_file=report_file, cancel=cancel, run_id=run_id,
                                                           report=report), overdue)
    finish(report)


@cli.command(epilog=EPILOG)
@settings_options
@reconcile_options
@allow_empty_source_option
@click.option("--dry-run", is_flag=True, help="Compute and report, write nothing (same as `plan`).")
@click.option("--force", is_flag=True,
              help="Apply even when the archive limits of the safety guard would abort (not an empty "
                   "product snapshot: see --allow-empty-source).")
@click.option("--wait-lock", "wait_lock_s", type=float, default=None, metavar="SECONDS",
              help="Wait up to SECONDS for another run's lock instead of exiting 6 at once.")
@click.option("--pushgateway", default=None, metavar="URL",
              help="Push run metrics to this Prometheus Pushgateway; user:password@ in it is sent as basic "
                   "auth (default: $RECONCILE_PUSHGATEWAY_URL).")
@click.pass_context
@expected_errors
def run(ctx: click.Context, dry_run: bool, force: bool, report_file: str | None, **flags: Any) -> None:
    """Full reconcile: create, update and archive marketplace tenants in one transaction."""
    _reconcile(ctx, dry_run=dry_run, force=force, report_file=report_file, flags=flags)


@cli.command(epilog=EPILOG)
@settings_options
@reconcile_options
@allow_empty_source_option
@click.pass_context
@expected_errors
def plan(ctx: click.Context, report_file: str | None, **flags: Any) -> None:
    """Same as `run --dry-run`: compute and report what run would do, write nothing, take no lock."""
    _reconcile(ctx, dry_run=True, force=False, report_file=report_file, flags=flags)


@cli.command("init-db", epilog=EPILOG)
@click.option("--product", "product", default=None, metavar="URL",
              help="Product DB URL (default: $PRODUCT_DATABASE_URL).")
@click.option("--marketplace", "marketplace", default=None, metavar="URL",
              help="Marketplace DB URL (default: $MARKETPLACE_DATABASE_URL).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="TOML config file (default: $RECONCILE_CONFIG).")
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default=None)
@click.pass_context
@expected_errors
def init_db(ctx: click.Context, product: str | None, marketplace: str | None, **flags: Any) -> None:
    """Create the databases and the product and marketplace schemas if absent (dev, test and demo only)."""
    from reconcile.logs import get_logger
    from reconcile.schema import ensure_database, init_marketplace, init_product

    settings = load(ctx, {**flags, "product_url": product, "marketplace_url": marketplace},
                    url_flags=("--product", "--marketplace"))
    log = get_logger()
    for what, db, init in (("product", settings.require_product(), init_product),
                           ("marketplace", settings.require_marketplace(), init_marketplace)):
        created = ensure_database(db)
        init(db)
        log.info("init_db.done", database=what, db=db.display, database_created=created)


@cli.command(epilog=EPILOG)
@click.option("--keep", is_flag=True, help="Leave the embedded server running (data in place); prints both "
                                           "database URLs and the command that stops it.")
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default=None)
@click.pass_context
@expected_errors
def demo(ctx: click.Context, keep: bool, log_format: str | None) -> None:
    """Start an embedded PostgreSQL, load the seed's tenants, run `plan` then `run`, show both."""
    from jobs.demo import run_demo

    fmt = log_format or ctx.find_root().params.get("log_format") or os.environ.get("RECONCILE_LOG_FORMAT")
    sys.exit(run_demo(log_format=fmt or "json", keep=keep))


@cli.command(epilog=EPILOG)
@settings_options
@reconcile_options
@click.option("--cron", "schedule_cron", default=None, metavar="EXPR",
              help="Standard 5-field crontab; 0 and 7 are Sunday (default: '0 2 * * *').")
@click.option("--timezone", "schedule_timezone", default=None, metavar="TZ",
              help="IANA time zone of the cron (default: UTC).")
@click.option("--run-now", is_flag=True, help="Also run once right away.")
@click.option("--stop-grace", "schedule_stop_grace_s", type=float, default=None, metavar="SECONDS",
              help="On SIGTERM, let a run in progress finish this long before rolling it back (default 60).")
@click.option("--wait-lock", "wait_lock_s", type=float, default=None, metavar="SECONDS",
              help="Each run waits up to SECONDS for another run's lock.")
@click.option("--pushgateway", default=None, metavar="URL",
              help="Push each run's metrics to this Prometheus Pushgateway (user:password@ as basic auth).")
# Hidden: lets tests and smoke checks see the loop fire repeatedly without waiting for a minute.
@click.option("--interval-seconds", type=click.FloatRange(min=0.1), default=None, hidden=True)
@click.pass_context
@expected_errors
def schedule(ctx: click.Context, run_now: bool, report_file: str | None, interval_seconds: float | None,
             **flags: Any) -> None:
    """Run `run` on a cron schedule, one run at a time, until SIGTERM/SIGINT (then exit 0)."""
    from jobs.scheduler import ScheduledRuns
    from reconcile.logs import get_logger

    settings = load_with_databases(ctx, flags, report_file)
    runs = ScheduledRuns(settings, lambda cancel, run_id: run_and_report(
        settings, dry_run=False, force=False, report_file=report_file, cancel=cancel, run_id=run_id),
        get_logger(component="schedule"), settings.schedule_stop_grace_s, interval_seconds)
    runs.serve(run_now)


def _register_commands() -> None:
    """Commands kept in modules of their own."""
    from jobs.http import serve
    from jobs.tenant_commands import status, sync

    for command in (sync, status, serve):
        cli.add_command(command)


def main() -> None:
    try:
        _register_commands()
    except KeyboardInterrupt:  # still importing the command modules
        fail("interrupted", 130)
    try:
        cli.main(prog_name="tenant-reconcile", standalone_mode=False)
    except click.UsageError as exc:  # one line, like every other configuration error
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `tenant-reconcile` (click >= 8.2): the help
            click.echo(exc.format_message(), err=True)
            sys.exit(exc.exit_code)
        where = exc.ctx.command_path if exc.ctx is not None else "tenant-reconcile"
        fail(f"usage error: {exc.format_message()} (see '{where} --help')", exc.exit_code)
    except click.ClickException as exc:
        fail(exc.format_message(), exc.exit_code)
    except click.exceptions.Abort:
        fail("aborted", 130)
    sys.exit(0)
