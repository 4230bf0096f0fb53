"""The `tenant-reconcile` command line. Exit codes are SPEC §4's; stdout carries JSON lines only."""

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
Connection settings: PRODUCT_DATABASE_URL, MARKETPLACE_DATABASE_URL (or *_FILE)."""


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
                     help="Marketplace DB URL (default: $MARKETPLACE_DATABASE_URL)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def load(ctx: click.Context, flags: dict[str, Any]) -> Settings:
    """Settings for this invocation, with logging configured; a bad config exits 2 here."""
    from reconcile.logs import configure_logging

    root = ctx.find_root().params
    config_file = flags.pop("config_file", None) or root.get("config_file")
    if flags.get("log_format") is None:
        flags["log_format"] = root.get("log_format")
    try:
        settings = load_settings(config_file=config_file, flags=flags)
    except ConfigError as exc:
        fail(f"configuration error: {exc}")
    configure_logging(settings.log_format)
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
        click.option("--shard", default=None, metavar="I/N",
                     help="Only tenants with int(md5(id)[:8],16) % N == I "
                          "(default: $JOB_COMPLETION_INDEX/$RECONCILE_SHARD_COUNT)."),
        click.option("--report-file", type=click.Path(dir_okay=False), default=None, metavar="PATH",
                     help="Also write the report object to PATH (atomically)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _reconcile(ctx: click.Context, *, dry_run: bool, force: bool, report_file: str | None,
               flags: dict[str, Any]) -> NoReturn:
    from reconcile.inbound import inbound_hook
    from reconcile.logs import get_logger
    from reconcile.reconciler import RunOptions, exit_code_of, run_reconcile
    from reconcile.report import Report, new_run_id

    settings = load(ctx, flags)
    settings.require_product()
    settings.require_marketplace()
    run_id = new_run_id()
    log = get_logger(run_id=run_id)
    report = Report(run_id=run_id, mode="dry-run" if dry_run else "apply", shard=settings.shard.label,
                    id_limit=settings.report_id_limit)
    options = RunOptions(dry_run=dry_run, force=force, after_write=inbound_hook(settings))
    report = run_reconcile(settings, options, log, report)
    if report_file:
        report.write_file(report_file, log)
    sys.exit(exit_code_of(report))


@cli.command(epilog=EPILOG)
@settings_options
@reconcile_options
@click.option("--dry-run", is_flag=True, help="Compute and report, write nothing (same as `plan`).")
@click.option("--force", is_flag=True, help="Apply even when the safety guard would abort.")
@click.option("--wait-lock", "wait_lock_s", type=float, default=None, metavar="SECONDS",
              help="Wait up to SECONDS for another run's lock instead of exiting 6 at once.")
@click.pass_context
@expected_errors
def run(ctx: click.Context, dry_run: bool, force: bool, report_file: str | None, **flags: Any) -> None:
    """Full reconcile: create, update and archive marketplace tenants in one transaction."""
    _reconcile(ctx, dry_run=dry_run, force=force, report_file=report_file, flags=flags)


@cli.command(epilog=EPILOG)
@settings_options
@reconcile_options
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
    """Create the databases and the SPEC §2 schemas if absent (dev, test and demo only)."""
    from reconcile.logs import get_logger
    from reconcile.schema import ensure_database, init_marketplace, init_product

    settings = load(ctx, {**flags, "product_url": product, "marketplace_url": marketplace})
    log = get_logger()
    for what, db, init in (("product", settings.require_product(), init_product),
                           ("marketplace", settings.require_marketplace(), init_marketplace)):
        created = ensure_database(db)
        init(db)
        log.info("init_db.done", database=what, db=db.display, database_created=created)


@cli.command(epilog=EPILOG)
@click.option("--keep", is_flag=True, help="Leave the embedded server's data directory in place.")
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default=None)
@click.pass_context
@expected_errors
def demo(ctx: click.Context, keep: bool, log_format: str | None) -> None:
    """Start an embedded PostgreSQL, load the seed's tenants, run `plan` then `run`, show both."""
    from jobs.demo import run_demo

    fmt = log_format or ctx.find_root().params.get("log_format") or os.environ.get("RECONCILE_LOG_FORMAT")
    sys.exit(run_demo(log_format=fmt or "json", keep=keep))


def _register_commands() -> None:
    """Commands kept in modules of their own."""
    from jobs.http import serve
    from jobs.tenant_commands import status, sync

    for command in (sync, status, serve):
        cli.add_command(command)


def main() -> None:
    _register_commands()
    cli(prog_name="tenant-reconcile")
