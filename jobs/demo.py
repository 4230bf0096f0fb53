"""`tenant-reconcile demo`: the demo's tenants (reconcile.testing.demo_data) on an embedded PostgreSQL;
`plan` then `run`, then a before/after table.

stdout keeps the JSON-lines contract (the table is also a `demo.table` event); the table is drawn
for humans on stderr, in plain ASCII so its columns line up in any terminal.

The demo runs in a worker thread under the shared process lifecycle (jobs.process): Ctrl-C or
SIGTERM, at any point, only asks it to stop. It then stops the embedded server, deletes its data
directory, prints `tenant-reconcile: interrupted (SIGINT|SIGTERM) ...` on stderr and exits 128 +
the signal: 130 for SIGINT, 143 for SIGTERM. `--keep` leaves the server running and prints both
database URLs and the command that stops it.
"""

from __future__ import annotations

import shlex
import signal
import sys
import time
from typing import Any

from jobs.process import StopSignal, ignore_signals, run_until_stopped
from reconcile.actions import ARCHIVE, CREATE, ORPHAN, UPDATE
from reconcile.db.cancel import Cancellation
from reconcile.db.urls import DatabaseUrl
from reconcile.pipeline.run import RunOptions, run_reconcile
from reconcile.report.logs import configure_logging, get_logger
from reconcile.report.model import Report, new_run_id
from reconcile.settings import Settings

ABSENT = "absent"
# The demo's cleanup must finish (never leave a server running): a long bound before giving up.
CLEANUP_BOUND_S = 60.0


class Interrupted(Exception):
    """A stop was requested: unwind (stopping the server on the way out)."""


def table_rows(prod: dict[str, Any], before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    def cell(value: Any) -> str | None:
        return f"{value[0]}/{value[1]}" if value else None

    return [{"tenant": tid, "product": cell(prod.get(tid)), "marketplace_before": cell(before.get(tid)),
             "marketplace_after": cell(after.get(tid))}
            for tid in sorted(set(prod) | set(before) | set(after))]


def render_table(rows: list[dict[str, Any]], report: Report) -> str:
    """The before/after table, ASCII only (a wide glyph such as ❌ takes two terminal cells and shifts
    every column after it). The action names come from the action kinds."""
    outcome = {tid: CREATE.counted_as for tid in report.lists[CREATE.counted_as]}
    outcome.update({u["id"]: f"{UPDATE.counted_as} " + ", ".join(u["changes"])
                    for u in report.lists[UPDATE.counted_as]})
    outcome.update({tid: f"{ARCHIVE.counted_as} (CLOSED)" for tid in report.lists[ARCHIVE.counted_as]})
    outcome.update({tid: f"{ORPHAN.verb} (reported)" for tid in report.lists[ORPHAN.counted_as]})
    header = ("tenant", "DB product", "DB marketplace before", "DB marketplace after", "action")
    lines = [(r["tenant"], r["product"] or ABSENT, r["marketplace_before"] or ABSENT, r["marketplace_after"] or ABSENT,
              outcome.get(r["tenant"], "unchanged")) for r in rows]
    widths = [max(len(str(x[i])) for x in [header, *lines]) for i in range(len(header))]
    fmt = " | ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*header), "-+-".join("-" * w for w in widths)]
    out += [fmt.format(*line) for line in lines]
    return "\n".join(out)


def kept_message(server: Any, product_url: str, marketplace_url: str) -> str:
    """What `--keep` prints on stderr: both URLs, ready to export, and the command that stops the
    server and deletes its data (run as the server's own user when we are root: pg_ctl refuses root)."""
    who = f" (pg_ctl runs as the server's user, {server.system_user})" if server.system_user else ""
    return "\n".join([
        f"tenant-reconcile: --keep: the embedded server is still running; its data is in {server.workdir}",
        f"  export PRODUCT_DATABASE_URL={shlex.quote(product_url)}",
        f"  export MARKETPLACE_DATABASE_URL={shlex.quote(marketplace_url)}",
        f"stop it and delete its data with{who}:",
        f"  {server.stop_command()}",
    ])


def run_demo(log_format: str = "json", keep: bool = False) -> int:
    """The demo's exit code: the worst of its two runs, or 128 + the signal that interrupted it."""
    stop = StopSignal()
    try:
        return run_until_stopped(lambda cancel: _demo(cancel, log_format, keep), stop=stop,
                                 overdue_after_s=CLEANUP_BOUND_S, restore=False)
    except Interrupted:
        print(f"tenant-reconcile: interrupted ({stop.name}); the embedded server was stopped and its "
              "data directory deleted", file=sys.stderr)
        return 128 + int(stop.signum or signal.SIGINT)
    finally:
        ignore_signals()  # the demo is over: a late signal has nothing left to stop


def _demo(cancel: Cancellation, log_format: str, keep: bool) -> int:
    from reconcile.testing.embedded import embedded_postgres

    configure_logging(log_format)
    log = get_logger(demo=True)
    started = time.perf_counter()

    def check() -> None:
        if cancel.requested:
            raise Interrupted()

    try:
        with embedded_postgres(keep=keep, interrupted=lambda: cancel.requested) as server:
            try:
                check()
                reports = _plan_and_run(server, log, log_format, started, cancel, check)
            except Exception:
                if keep and not cancel.requested:  # kept for a look at what went wrong: say where it is
                    _say_kept(server, log)
                raise
            if keep:
                _say_kept(server, log)
    except Exception:
        if cancel.requested:  # whatever failed, failed because of the stop (a Ctrl-C at the terminal
            raise Interrupted() from None  # reaches the server's processes too)
        raise
    check()
    log.info("demo.done", seconds=round(time.perf_counter() - started, 2))
    return max(r.exit_code for r in reports)


def _plan_and_run(server: Any, log: Any, log_format: str, started: float, cancel: Cancellation,
                  check: Any) -> list[Report]:
    from reconcile.testing.demo_data import load_demo_tenants, read_tables

    product = DatabaseUrl.parse(server.url("keybuzz"), "product")
    marketplace = DatabaseUrl.parse(server.url("keybuzz_backend"), "marketplace")
    log.info("demo.server_started", product=product.display, marketplace=marketplace.display,
             seconds=round(time.perf_counter() - started, 2))
    load_demo_tenants(product, marketplace)
    check()
    settings = Settings(product_url=product, marketplace_url=marketplace, log_format=log_format, connect_retry_s=0)
    prod, before = read_tables(product, marketplace)
    reports = []
    for dry_run in (True, False):
        run_id = new_run_id()
        report = Report(run_id=run_id, mode="dry-run" if dry_run else "apply")
        reports.append(run_reconcile(settings, RunOptions(dry_run=dry_run, cancel=cancel), get_logger(run_id=run_id),
                                     report))
        check()
    _, after = read_tables(product, marketplace)
    rows = table_rows(prod, before, after)
    # The event carries the rows for JSON readers; for people the table below is the rendering.
    log.info("demo.table", **({"tenants": len(rows)} if log_format == "console" else {"rows": rows}))
    print("\n" + render_table(rows, reports[-1]) + "\n", file=sys.stderr)
    return reports


def _say_kept(server: Any, log: Any) -> None:
    log.info("demo.kept", workdir=server.workdir, stop_command=server.stop_command())
    print(kept_message(server, server.url("keybuzz"), server.url("keybuzz_backend")), file=sys.stderr)
