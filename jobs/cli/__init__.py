"""The `tenant-reconcile` command line: the group and every command, registered here statically.

One module per command group (`reconcile`: run, plan, show; `check`; `single`: sync, status;
`schedule`; `serve`; `trigger`: install-trigger; `dev`: init-db, demo); what they share is in
`common`. Commands only parse, load settings, call jobs.commands and shape the answer.
"""

from __future__ import annotations

import sys

import click

from jobs.cli.check import check
from jobs.cli.common import EPILOG, fail
from jobs.cli.dev import demo, init_db
from jobs.cli.reconcile import plan, run, show
from jobs.cli.schedule import schedule
from jobs.cli.serve import serve
from jobs.cli.single import status, sync
from jobs.cli.trigger import install_trigger
from reconcile.settings import LOG_FORMATS


@click.group(epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="TOML config file (default: $RECONCILE_CONFIG).")
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default=None,
              help="json (default), console for humans, ecs for Elasticsearch.")
@click.version_option(package_name="tenant-reconcile")
def cli(config_file: str | None, log_format: str | None) -> None:
    """Keep the marketplace DB's tenants in step with the product DB (the source of truth).

    Snapshots both tables, computes a diff, applies create/update/archive in one transaction and
    prints one JSON report (event "reconcile.report") on stdout."""


for _command in (run, plan, show, check, sync, status, schedule, serve, install_trigger, init_db, demo):
    cli.add_command(_command)


def main() -> None:
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
