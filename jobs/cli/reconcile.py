"""`run` and `plan`: a full reconcile, or the same computed and reported without writing."""

from __future__ import annotations

from typing import Any, NoReturn

import click

from jobs.cli.common import (
    ALLOW_EMPTY_SOURCE_OPTION,
    EPILOG,
    PUSHGATEWAY_OPTION,
    WAIT_LOCK_OPTION,
    expected_errors,
    finish,
    load_with_databases,
    reconcile_options,
    settings_options,
)


def _reconcile(ctx: click.Context, *, dry_run: bool, force: bool, report_file: str | None,
               flags: dict[str, Any]) -> NoReturn:
    from jobs.commands import reconcile_until_stopped

    settings = load_with_databases(ctx, flags, report_file)
    finish(reconcile_until_stopped(settings, dry_run=dry_run, force=force, report_file=report_file))


@click.command(epilog=EPILOG)
@settings_options
@reconcile_options
@ALLOW_EMPTY_SOURCE_OPTION
@click.option("--dry-run", is_flag=True, help="Compute and report, write nothing (same as `plan`).")
@click.option("--force", is_flag=True,
              help="Apply even when the archive limits of the safety guard would abort (not an empty "
                   "product snapshot: see --allow-empty-source).")
@WAIT_LOCK_OPTION
@PUSHGATEWAY_OPTION
@click.pass_context
@expected_errors
def run(ctx: click.Context, dry_run: bool, force: bool, report_file: str | None, **flags: Any) -> None:
    """Full reconcile: create, update and archive marketplace tenants in one transaction."""
    _reconcile(ctx, dry_run=dry_run, force=force, report_file=report_file, flags=flags)


@click.command(epilog=EPILOG)
@settings_options
@reconcile_options
@ALLOW_EMPTY_SOURCE_OPTION
@click.pass_context
@expected_errors
def plan(ctx: click.Context, report_file: str | None, **flags: Any) -> None:
    """Same as `run --dry-run`: compute and report what run would do, write nothing, take no lock."""
    _reconcile(ctx, dry_run=True, force=False, report_file=report_file, flags=flags)
