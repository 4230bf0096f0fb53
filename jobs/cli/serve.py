"""`serve`: keybuzz-backend's internal tenant endpoints over HTTP (needs the `http` extra)."""

from __future__ import annotations

import os
from typing import Any

import click

from jobs.cli.common import EPILOG, expected_errors, fail, load_with_databases, settings_options


@click.command(epilog=EPILOG)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@settings_options
@click.pass_context
@expected_errors
def serve(ctx: click.Context, host: str, port: int, **flags: Any) -> None:
    """Serve POST /api/v1/tenants/sync, POST /api/v1/tenants/sync-all and
    GET /api/v1/tenants/status/{tenantId} (needs the http extra: pip install '.[http]').

    Auth: X-Internal-Key must equal INBOUND_WEBHOOK_KEY (or the file INBOUND_WEBHOOK_KEY_FILE);
    KEYBUZZ_DEV_MODE=true disables the check (and says so at startup). SIGTERM/SIGINT: no new
    requests; the runs in flight are cancelled (rolled back unless committed) and answered 503;
    exit 0 within 10 s."""
    from jobs.http import (
        BACKLOG,
        DEV_ENV,
        KEY_ENV,
        InFlight,
        create_app,
        dev_mode,
        listen_sockets,
        read_key,
        serve_until_stopped,
    )
    from reconcile.report.logs import get_logger

    settings = load_with_databases(ctx, flags)
    key = read_key(os.environ)
    dev = dev_mode(os.environ)
    if key is None and not dev:
        fail(f"configuration error: {KEY_ENV} is not set (nor {KEY_ENV}_FILE); required unless {DEV_ENV}=true")
    try:
        import uvicorn
        from uvicorn.main import STARTUP_FAILURE
    except ImportError:
        fail("serve needs the http extra: from a checkout of the project, pip install '.[http]'")
    log = get_logger(component="http")
    if dev:
        log.warning("http.dev_mode", detail=f"{DEV_ENV}=true: requests are not authenticated")
    sockets = listen_sockets(host, port)  # a port in use is exit 2 here, before anything says "listening"
    log.info("http.listening", host=host, port=port)
    runs = InFlight()
    config = uvicorn.Config(create_app(settings, key, dev, log, runs), host=host, port=port, log_config=None,
                            access_log=False, server_header=False, date_header=False, backlog=BACKLOG)
    try:
        serve_until_stopped(config, sockets, runs, log)
    except SystemExit as exc:
        if exc.code == STARTUP_FAILURE:  # uvicorn's 3 would read as "partial"
            fail("internal error: the HTTP server could not start (see the log above)", 1)
        raise
    finally:
        for sock in sockets:
            sock.close()
