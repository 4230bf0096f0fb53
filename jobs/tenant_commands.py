"""`sync TENANT_ID` and `status TENANT_ID`: the seed's single-tenant endpoints as commands."""

from __future__ import annotations

import sys
from typing import Any

import click
import orjson

from jobs.cli import EPILOG, expected_errors, fail, load_with_databases, settings_options
from reconcile.ids import tenant_id_problem
from reconcile.settings import parse_countries


def _check_tenant_id(tenant_id: str) -> None:
    """Before any setting is read or database reached: argv can hold anything, e.g. a lone surrogate
    standing for a byte that is not UTF-8, which no database driver accepts."""
    problem = tenant_id_problem(tenant_id, name="TENANT_ID")
    if problem:
        fail(f"configuration error: {problem}")


def _print(body: dict[str, Any]) -> None:
    from reconcile.logs import stdout_bytes

    out = stdout_bytes()
    out.write(orjson.dumps(body) + b"\n")
    out.flush()


@click.command(epilog=EPILOG)
@click.argument("tenant_id")
@click.option("--country", default="FR", show_default=True, metavar="CC",
              help="Country of the Amazon inbound address to ensure.")
@click.option("--no-inbound", is_flag=True, help="Do not ensure an inbound address.")
@click.option("--wait-lock", "wait_lock_s", type=float, default=None, metavar="SECONDS",
              help="Wait up to SECONDS while a full run holds the lock instead of exiting 6.")
@settings_options
@click.pass_context
@expected_errors
def sync(ctx: click.Context, tenant_id: str, country: str, no_inbound: bool, **flags: Any) -> None:
    """Reconcile one tenant (create, update or archive) and ensure its inbound address.

    Prints the seed's response {"success","tenant","inboundAddress"} as the last stdout line,
    after the usual events and report. Exit 4 when the tenant is not in the product DB; exit 2
    when TENANT_ID is blank, longer than 128 characters, or holds a NUL or bytes that are not UTF-8."""
    from jobs.signals import run_cancellable
    from reconcile.errors import TenantNotFound
    from reconcile.logs import get_logger
    from reconcile.report import new_run_id
    from reconcile.tenant import NOT_FOUND, sync_tenant

    _check_tenant_id(tenant_id)
    settings = load_with_databases(ctx, flags)
    code = None
    if not no_inbound:
        countries = parse_countries(country, "--country")
        if len(countries) != 1:
            fail("configuration error: --country takes exactly one two-letter country code")
        code = countries[0]
    run_id = new_run_id()
    try:
        result = run_cancellable(lambda cancel: sync_tenant(settings, tenant_id, code, get_logger(run_id=run_id),
                                                            run_id, cancel))
    except TenantNotFound:
        _print({"success": False, "error": NOT_FOUND})
        sys.exit(TenantNotFound.exit_code)
    _print(result.body)
    sys.exit(result.exit_code)


@click.command(epilog=EPILOG)
@click.argument("tenant_id")
@settings_options
@click.pass_context
@expected_errors
def status(ctx: click.Context, tenant_id: str, **flags: Any) -> None:
    """Show one tenant in both databases, whether they are in sync, and how they differ.

    Read-only, takes no lock. Exit 0, or 4 when the tenant is in neither database; exit 2 when
    TENANT_ID cannot be a tenant id (as for sync)."""
    from reconcile.tenant import tenant_status

    _check_tenant_id(tenant_id)
    settings = load_with_databases(ctx, flags)
    body, code = tenant_status(settings, tenant_id)
    _print(body)
    sys.exit(code)
