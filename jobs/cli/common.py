"""What every command of the CLI shares: its options, how settings are loaded (a bad one is exit 2
in one line), how expected failures become one stderr line and their exit code, and how a command
ends. stdout carries JSON lines only (or, with `--log-format console`, a rendering for people)."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click
import orjson

from reconcile.errors import ConfigError, ReconcileError
from reconcile.settings import LOG_FORMATS, ORPHAN_MODES, Settings, load_settings

EPILOG = """\b
Exit codes: 0 success · 1 internal error · 2 usage/configuration · 3 partial (row errors or
conflicts) · 4 tenant not found · 5 safety guard · 6 lock held · 7 database failure.
Connection settings: PRODUCT_DATABASE_URL, MARKETPLACE_DATABASE_URL (or *_FILE; the marketplace
falls back to DATABASE_URL). Every setting: flag > environment > config file > default."""

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr, no traceback, and the exit code."""
    click.echo(f"tenant-reconcile: {message}", err=True)
    sys.exit(code)


def options(*decorators: Decorator) -> Decorator:
    """Several click options as one decorator, in the order given."""
    def apply(func: Callable[..., Any]) -> Callable[..., Any]:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func
    return apply


CONFIG_OPTION = click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
                             help="TOML config file (default: $RECONCILE_CONFIG).")
LOG_FORMAT_OPTION = click.option("--log-format", type=click.Choice(LOG_FORMATS), default=None,
                                 help="json (default), console for humans, ecs for Elasticsearch.")
WAIT_LOCK_OPTION = click.option("--wait-lock", "wait_lock_s", type=float, default=None, metavar="SECONDS",
                                help="Wait up to SECONDS for another run's lock instead of exiting 6 at once.")
PUSHGATEWAY_OPTION = click.option(
    "--pushgateway", default=None, metavar="URL",
    help="Push run metrics to this Prometheus Pushgateway; user:password@ in it is sent as basic auth "
         "(default: $RECONCILE_PUSHGATEWAY_URL).")

# Options every command that reads settings accepts, after the command name.
settings_options = options(
    CONFIG_OPTION,
    LOG_FORMAT_OPTION,
    click.option("--product-url", default=None, metavar="URL", help="Product DB URL (default: $PRODUCT_DATABASE_URL)."),
    click.option("--marketplace-url", default=None, metavar="URL",
                 help="Marketplace DB URL (default: $MARKETPLACE_DATABASE_URL, else $DATABASE_URL)."),
)

# Options of every command that runs a reconcile.
reconcile_options = options(
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
)

# A flag of one invocation only (`run`, `plan`): never in the environment, the config file or a
# long-running `schedule`, where it would also let through the night the product URL is wrong.
ALLOW_EMPTY_SOURCE_OPTION = click.option(
    "--allow-empty-source", is_flag=True, default=None,
    help="Let the run proceed although the product snapshot is empty while the marketplace is "
         "not (normally a wrong URL or a failed restore; --force does not lift this).")


def load(ctx: click.Context, flags: dict[str, Any], url_flags: tuple[str, str] = Settings.url_flags) -> Settings:
    """Settings for this invocation, with logging configured; a bad config exits 2 here."""
    from reconcile.report.logs import configure_logging

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
    from reconcile.report.file import check_report_path

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
            from jobs.process import ignore_signals

            ignore_signals()  # a second Ctrl-C must not kill the exit half-way (exit 130, not -2)
            fail("interrupted", 130)
        except Exception as exc:
            if os.environ.get("RECONCILE_DEBUG"):
                raise
            from reconcile.db.urls import scrub_credentials

            fail(f"internal error: {type(exc).__name__}: {scrub_credentials(str(exc)).splitlines()[0]}"
                 " (set RECONCILE_DEBUG=1 for a traceback)", 1)

    return wrapper


def print_json(body: dict[str, Any]) -> None:
    """One JSON line on stdout (EPIPE-safe, like the events)."""
    from reconcile.report.logs import stdout_bytes

    out = stdout_bytes()
    out.write(orjson.dumps(body) + b"\n")
    out.flush()


def print_answer(body: dict[str, Any], log_format: str, render: Callable[[dict[str, Any]], str]) -> None:
    """A command's final answer: one JSON line, or for `--log-format console` the block `render`
    makes of it (EPIPE-safe, like the events)."""
    if log_format != "console":
        print_json(body)
        return
    from reconcile.report.logs import stdout_text

    out = stdout_text()
    out.write(render(body) + "\n")
    out.flush()


def finish(report: Any) -> NoReturn:
    """Exit with the run's code; a run that did not complete also says why in one stderr line
    (stdout stays JSON only), so a terminal or a Job's events show it without parsing the report."""
    code = report.exit_code
    if not report.completed:
        error = report.error or report.status
        click.echo(f"tenant-reconcile: {'configuration error: ' if code == 2 else ''}{error}", err=True)
    from jobs.process import exit_now

    exit_now(code)
