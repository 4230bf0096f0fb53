"""`run`, `plan` and `show`: a full reconcile, the same computed and reported without writing (and
saved for review with `--out`), a saved plan applied exactly (`run --plan`), and a saved plan shown
for people."""

from __future__ import annotations

import re
from typing import Any, NoReturn

import click

from jobs.cli.common import (
    ALLOW_EMPTY_SOURCE_OPTION,
    EPILOG,
    PUSHGATEWAY_OPTION,
    WAIT_LOCK_OPTION,
    expected_errors,
    fail,
    finish,
    load_with_databases,
    options,
    reconcile_options,
    settings_options,
)

ONLY_OPTIONS = options(
    click.option("--only", default=None, metavar="ID,..",
                 help="Only these tenants, with every rule of a full run (locks like sync)."),
    click.option("--only-file", default=None, type=click.Path(dir_okay=False), metavar="PATH",
                 help="Only the tenants listed in PATH, one id a line."),
)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, where: str) -> float:
    """`3600`, `90m`, `24h`, `2d` as seconds; exit 2 otherwise."""
    match = _DURATION.match(text)
    if not match:
        fail(f"configuration error: {where} must be a duration like 24h, 90m or 3600 (seconds), got {text!r}")
    return float(match[1]) * _UNIT_S[match[2]]


def _only(only: str | None, only_file: str | None) -> tuple[str, ...] | None:
    from reconcile.errors import ConfigError
    from reconcile.ids import id_list, read_id_file

    if only is not None and only_file is not None:
        fail("configuration error: give --only or --only-file, not both")
    try:
        if only is not None:
            return id_list([i.strip() for i in only.split(",") if i.strip()], "--only")
        return read_id_file(only_file) if only_file is not None else None
    except ConfigError as exc:
        fail(f"configuration error: {exc}")


def _reconcile(ctx: click.Context, request: Any, flags: dict[str, Any]) -> NoReturn:
    from jobs.commands import reconcile_until_stopped

    settings = load_with_databases(ctx, flags, request.report_file)
    finish(reconcile_until_stopped(settings, request))


@click.command(epilog=EPILOG)
@settings_options
@reconcile_options
@ONLY_OPTIONS
@ALLOW_EMPTY_SOURCE_OPTION
@click.option("--dry-run", is_flag=True, help="Compute and report, write nothing (same as `plan`).")
@click.option("--force", is_flag=True,
              help="Apply even when the archive limits of the safety guard would abort (not an empty "
                   "product snapshot: see --allow-empty-source).")
@click.option("--plan", "plan_path", default=None, type=click.Path(dir_okay=False), metavar="FILE",
              help="Apply exactly this saved plan (from `plan --out`), compare-and-set against the values it "
                   "read; refused for other databases, another mapping, or an older plan than --max-plan-age.")
@click.option("--max-plan-age", default="24h", show_default=True, metavar="DURATION",
              help="Oldest saved plan --plan accepts (e.g. 24h, 90m, 3600).")
@WAIT_LOCK_OPTION
@PUSHGATEWAY_OPTION
@click.pass_context
@expected_errors
def run(ctx: click.Context, dry_run: bool, force: bool, report_file: str | None, only: str | None,
        only_file: str | None, plan_path: str | None, max_plan_age: str, **flags: Any) -> None:
    """Full reconcile: create, update and archive marketplace tenants in one transaction."""
    from jobs.commands import RunRequest, reconcile_until_stopped, saved_plan_for

    restricted = _only(only, only_file)
    if plan_path is None:
        _reconcile(ctx, RunRequest(dry_run=dry_run, force=force, report_file=report_file, only=restricted,
                                   takes_allow_empty_source=True), flags)
    if restricted is not None or dry_run:
        fail("configuration error: --plan applies the saved plan as it is: no --only, --only-file or --dry-run")
    settings = load_with_databases(ctx, flags, report_file)
    saved = saved_plan_for(settings, plan_path, parse_duration(max_plan_age, "--max-plan-age"))
    finish(reconcile_until_stopped(settings, RunRequest(force=force, report_file=report_file, saved_plan=saved,
                                                        takes_allow_empty_source=True)))


@click.command(epilog=EPILOG)
@settings_options
@reconcile_options
@ONLY_OPTIONS
@ALLOW_EMPTY_SOURCE_OPTION
@click.option("--out", "plan_out", default=None, type=click.Path(dir_okay=False), metavar="FILE",
              help="Also save the plan to FILE, for review (`show FILE`) and for `run --plan FILE`.")
@click.pass_context
@expected_errors
def plan(ctx: click.Context, report_file: str | None, only: str | None, only_file: str | None,
         plan_out: str | None, **flags: Any) -> None:
    """Same as `run --dry-run`: compute and report what run would do, write nothing, take no lock."""
    from jobs.commands import RunRequest
    from reconcile.report.file import check_report_path

    if plan_out:
        check_report_path(plan_out, "--out")
    _reconcile(ctx, RunRequest(dry_run=True, report_file=report_file, only=_only(only, only_file),
                               plan_out=plan_out, takes_allow_empty_source=True), flags)


@click.command(epilog=EPILOG)
@click.argument("plan_file", type=click.Path(dir_okay=False))
@click.pass_context
@expected_errors
def show(ctx: click.Context, plan_file: str) -> None:
    """Show a saved plan (from `plan --out FILE`) for people: where and when it was made, every action
    with the values read and those to write, the row errors, and the totals."""
    from jobs.plans import read_plan_document, render_plan
    from jobs.process import default_signals

    default_signals()  # nothing to stop cleanly: Python's own handling
    click.echo(render_plan(read_plan_document(plan_file), path=plan_file))
