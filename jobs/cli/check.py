"""`check`: the read-only preflight before the first run and after every change of credentials."""

from __future__ import annotations

import sys
from typing import Any

import click

from jobs.cli.common import EPILOG, expected_errors, load_with_databases, settings_options
from reconcile.settings import ORPHAN_MODES

EXIT_OK, EXIT_PROBLEMS, EXIT_UNREACHABLE = 0, 2, 7


@click.command(epilog=EPILOG)
@settings_options
@click.option("--ensure-inbound", "inbound_countries", default=None, metavar="CC,..",
              help="Also check the inbound tables and their grants (as a run with these countries needs).")
@click.option("--shard", default=None, metavar="I/N", help="Check the lock of this shard too.")
@click.option("--orphans", type=click.Choice(ORPHAN_MODES), default=None, hidden=True)
@click.pass_context
@expected_errors
def check(ctx: click.Context, **flags: Any) -> None:
    """Check, reading only: both databases reachable (versions, clock offset), the tables, columns and
    enum labels the tool needs, the mapping's targets, the grants a run needs, and whether the run
    lock is free (and who holds it). Exit 0 all good, 2 a configuration, grant or schema problem
    (each listed), 7 a database unreachable or the check stopped (SIGTERM/SIGINT)."""
    from jobs.checks import check_answer, render_check
    from jobs.commands import check as preflight
    from reconcile.report.logs import get_logger

    settings = load_with_databases(ctx, flags)
    found = preflight(settings)
    answer = check_answer(found)
    if settings.log_format == "console":
        click.echo(render_check(found))
    else:
        log = get_logger(component="check")
        (log.info if answer["status"] == "ok" else log.error)("check.report", **answer)
    code = EXIT_UNREACHABLE if found.unreachable else EXIT_PROBLEMS if found.problems else EXIT_OK
    if code:
        for problem in found.problems:
            click.echo(f"tenant-reconcile: check: {problem.check}: {problem.detail}", err=True)
    sys.exit(code)
