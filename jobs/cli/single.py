"""`sync TENANT_ID` and `status TENANT_ID`: one tenant at a time, answering as keybuzz-backend's
`POST /api/v1/tenants/sync` and `GET /api/v1/tenants/status/:tenantId` did."""

from __future__ import annotations

import sys
from typing import Any

import click

from jobs.cli.common import (
    EPILOG,
    WAIT_LOCK_OPTION,
    expected_errors,
    fail,
    finish,
    load_with_databases,
    print_answer,
    settings_options,
)
from reconcile.ids import tenant_id_problem
from reconcile.settings import parse_countries


def _check_tenant_id(tenant_id: str) -> None:
    """Before any setting is read or database reached: argv can hold anything, e.g. a lone surrogate
    standing for a byte that is not UTF-8, which no database driver accepts."""
    problem = tenant_id_problem(tenant_id, name="TENANT_ID")
    if problem:
        fail(f"configuration error: {problem}")


def _one_country(country: str) -> str:
    countries = parse_countries(country, "--country")
    if len(countries) != 1:
        fail("configuration error: --country takes exactly one two-letter country code")
    return countries[0]


@click.command(epilog=EPILOG)
@click.argument("tenant_id")
@click.option("--country", default="FR", show_default=True, metavar="CC",
              help="Country of the Amazon inbound address to ensure.")
@click.option("--no-inbound", is_flag=True, help="Do not ensure an inbound address.")
@WAIT_LOCK_OPTION
@settings_options
@click.pass_context
@expected_errors
def sync(ctx: click.Context, tenant_id: str, country: str, no_inbound: bool, **flags: Any) -> None:
    """Reconcile one tenant (create, update or archive) and ensure its inbound address.

    Prints {"success","tenant","inboundAddress"} as the last stdout line, after the usual events and
    report (with --log-format console, as a short block instead). Exit 4 when the tenant is not in
    the product DB; exit 2 when TENANT_ID is blank, longer than 128 characters, or holds a NUL or
    bytes that are not UTF-8."""
    from jobs.answers import not_found, sync_answer
    from jobs.commands import sync_until_stopped
    from reconcile.errors import TenantNotFound
    from reconcile.report.console import render_sync

    _check_tenant_id(tenant_id)
    settings = load_with_databases(ctx, flags)
    code = None if no_inbound else _one_country(country)

    def answer(outcome: Any) -> None:
        print_answer(sync_answer(outcome), settings.log_format, render_sync)

    try:
        outcome = sync_until_stopped(settings, tenant_id, code, answer)
    except TenantNotFound:
        print_answer(not_found(), settings.log_format, render_sync)
        sys.exit(TenantNotFound.exit_code)
    answer(outcome)
    finish(outcome.report)  # a sync that failed also says why on stderr, as a run does


@click.command(epilog=EPILOG)
@click.argument("tenant_id")
@settings_options
@click.pass_context
@expected_errors
def status(ctx: click.Context, tenant_id: str, **flags: Any) -> None:
    """Show one tenant in both databases, whether they are in sync, and how they differ.

    Prints the status JSON (with --log-format console, as tables). Read-only, takes no lock. Exit 0,
    or 4 when the tenant is in neither database; exit 2 when TENANT_ID cannot be a tenant id (as for
    sync); exit 7 when a database cannot be read or SIGTERM/SIGINT stopped it (one stderr line)."""
    from jobs.answers import status_answer
    from jobs.commands import status as tenant_status
    from reconcile.errors import TenantNotFound
    from reconcile.report.console import render_status

    _check_tenant_id(tenant_id)
    settings = load_with_databases(ctx, flags)
    found = tenant_status(settings, tenant_id)
    print_answer(status_answer(found), settings.log_format, render_status)
    sys.exit(0 if found.found else TenantNotFound.exit_code)
