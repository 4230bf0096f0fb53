"""`install-trigger`: the product-side trigger the `pg` event source listens to."""

from __future__ import annotations

from typing import Any

import click

from jobs.cli.common import CONFIG_OPTION, EPILOG, LOG_FORMAT_OPTION, expected_errors, load


@click.command("install-trigger", epilog=EPILOG)
@click.option("--product-url", default=None, metavar="URL", help="Product DB URL (default: $PRODUCT_DATABASE_URL).")
@click.option("--print", "print_only", is_flag=True,
              help="Print the SQL (for a DBA to review and run) instead of running it; connects nowhere.")
@CONFIG_OPTION
@LOG_FORMAT_OPTION
@click.pass_context
@expected_errors
def install_trigger(ctx: click.Context, print_only: bool, **flags: Any) -> None:
    """Create, or replace with the same, the trigger on the product DB's `tenants` table that
    announces every insert, update and delete on channel tenant_changed (payload: the tenant id),
    for `schedule --listen pg`. Idempotent, in one transaction; the only change this tool makes to
    the product DB. Needs the right to create a function and a trigger on `tenants`."""
    from jobs.process import default_signals
    from reconcile import trigger

    default_signals()  # nothing to stop cleanly: Python's own handling
    if print_only:
        click.echo(trigger.TRIGGER_SQL.strip())
        return
    from reconcile.report.logs import get_logger

    settings = load(ctx, flags)
    trigger.install_trigger(settings, get_logger())
