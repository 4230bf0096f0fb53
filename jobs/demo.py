"""`tenant-reconcile demo`: the seed's six tenants plus a drifted plan, an archived tenant and an orphan,
on an embedded PostgreSQL; `plan` then `run`, then the seed's before/after table.

stdout keeps the JSON-lines contract (the table is also a `demo.table` event); the table is drawn
for humans on stderr, in plain ASCII so its columns line up in any terminal.

Interrupted (Ctrl-C or SIGTERM, at any point), the demo stops the embedded server, then deletes
its data directory, prints `tenant-reconcile: interrupted (SIGINT|SIGTERM) ...` on stderr and exits
128 + the signal: 130 for SIGINT, 143 for SIGTERM. `--keep` leaves the server running and prints
both database URLs and the command that stops it.
"""

from __future__ import annotations

import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from reconcile.db import DatabaseUrl, engine_for
from reconcile.logs import configure_logging, get_logger
from reconcile.reconciler import RunOptions, exit_code_of, run_reconcile
from reconcile.report import Report, new_run_id
from reconcile.schema import ensure_database, init_marketplace, init_product
from reconcile.settings import Settings

PRODUCT_TENANTS = [
    # id, name, plan, status  (product terms, lowercase)
    ("ecomlg-001", "eComLG", "pro", "active"),
    ("kbz-001", "KeyBuzz Studio", "starter", "active"),
    ("kbz-002", "KeyBuzz Agency", "pro", "active"),
    ("kbz-003", "KeyBuzz Labs", "dev", "trial"),
    ("kbz-004", "KeyBuzz Retail", "enterprise", "active"),
    ("tenant_test_dev", "Tenant Test Dev", "dev", "trial"),
    ("kbz-005", "KeyBuzz Legacy", "starter", "archived"),
]
MARKETPLACE_TENANTS = [
    # id, slug, name, plan, status  (marketplace terms): kbz-003 and kbz-004 missing, as in the seed
    ("ecomlg-001", "ecomlg-001", "eComLG", "PRO", "ACTIVE"),
    ("kbz-001", "kbz-001", "KeyBuzz Studio", "STARTER", "ACTIVE"),
    ("kbz-002", "kbz-002", "KeyBuzz Agency", "STARTER", "ACTIVE"),  # drifted plan
    ("tenant_test_dev", "tenant-test-dev", "Tenant Test Dev", "DEV", "TRIAL"),
    ("kbz-005", "kbz-005", "KeyBuzz Legacy", "STARTER", "ACTIVE"),  # archived in product
    ("legacy-009", "legacy-009", "Old Shop", "PRO", "ACTIVE"),      # orphan
]


def load_seed(product: DatabaseUrl, marketplace: DatabaseUrl) -> None:
    for db, init in ((product, init_product), (marketplace, init_marketplace)):
        ensure_database(db)
        init(db)
    with _engine(product).begin() as conn:
        conn.execute(sa.text("INSERT INTO tenants (id, name, plan, status) VALUES (:i, :n, :p, :s)"),
                     [dict(zip(("i", "n", "p", "s"), row, strict=True)) for row in PRODUCT_TENANTS])
    with _engine(marketplace).begin() as conn:
        conn.execute(sa.text('INSERT INTO "Tenant" (id, slug, name, plan, status, "updatedAt") '
                             "VALUES (:i, :g, :n, CAST(:p AS \"BillingPlan\"), CAST(:s AS \"TenantStatus\"), "
                             "timezone('UTC', now()))"),
                     [dict(zip(("i", "g", "n", "p", "s"), row, strict=True)) for row in MARKETPLACE_TENANTS])


def _engine(db: DatabaseUrl) -> sa.Engine:
    return engine_for(db)


def read_tables(product: DatabaseUrl, marketplace: DatabaseUrl) -> tuple[dict[str, Any], dict[str, Any]]:
    with _engine(product).connect() as conn:
        prod = {r.id: (r.plan, r.status) for r in conn.execute(sa.text("SELECT id, plan, status FROM tenants"))}
    with _engine(marketplace).connect() as conn:
        market = {r.id: (r.plan, r.status) for r in
                  conn.execute(sa.text('SELECT id, plan::text AS plan, status::text AS status FROM "Tenant"'))}
    return prod, market


def table_rows(prod: dict[str, Any], before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    def cell(value: Any) -> str | None:
        return f"{value[0]}/{value[1]}" if value else None

    return [{"tenant": tid, "product": cell(prod.get(tid)), "marketplace_before": cell(before.get(tid)),
             "marketplace_after": cell(after.get(tid))}
            for tid in sorted(set(prod) | set(before) | set(after))]


ABSENT = "absent"


def render_table(rows: list[dict[str, Any]], report: Report) -> str:
    """The seed's table, ASCII only (a wide glyph such as ❌ takes two terminal cells and shifts
    every column after it)."""
    def mark(value: str | None) -> str:
        return value or ABSENT

    outcome = {tid: "created" for tid in report.lists["created"]}
    outcome.update({u["id"]: "updated " + ", ".join(u["changes"]) for u in report.lists["updated"]})
    outcome.update({tid: "archived (CLOSED)" for tid in report.lists["archived"]})
    outcome.update({tid: "orphan (reported)" for tid in report.lists["orphans"]})
    header = ("tenant", "DB product", "DB marketplace before", "DB marketplace after", "action")
    lines = [(r["tenant"], mark(r["product"]), mark(r["marketplace_before"]), mark(r["marketplace_after"]),
              outcome.get(r["tenant"], "unchanged")) for r in rows]
    widths = [max(len(str(x[i])) for x in [header, *lines]) for i in range(len(header))]
    fmt = " | ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*header), "-+-".join("-" * w for w in widths)]
    out += [fmt.format(*line) for line in lines]
    return "\n".join(out)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM during the demo. A KeyboardInterrupt, so everything unwinds as on Ctrl-C
    (and the embedded server is stopped and removed on the way out)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(self.name)


@contextmanager
def _interruptible() -> Iterator[None]:
    """SIGINT and SIGTERM raise Interrupted, once: a second Ctrl-C while the demo cleans up is
    ignored, so it cannot cut the cleanup short. Once the demo is over (cleaned up, about to exit),
    late signals are ignored: there is nothing left to stop."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = False

    def handler(signum: int, _frame: Any) -> None:
        nonlocal raised
        if not raised:
            raised = True
            raise Interrupted(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


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
    """The demo's exit code: the worst of its two runs, or 128 + the signal that interrupted it.
    Meant to be the last thing the process does (it leaves SIGINT/SIGTERM ignored)."""
    with _interruptible():
        try:
            return _run_demo(log_format, keep)
        except Interrupted as exc:
            print(f"tenant-reconcile: interrupted ({exc.name}); the embedded server was stopped and its "
                  "data directory deleted", file=sys.stderr)
            return 128 + exc.signum


def _seed_plan_run(server: Any, log: Any, log_format: str, started: float) -> list[Report]:
    product = DatabaseUrl.parse(server.url("keybuzz"), "product")
    marketplace = DatabaseUrl.parse(server.url("keybuzz_backend"), "marketplace")
    log.info("demo.server_started", product=product.display, marketplace=marketplace.display,
             seconds=round(time.perf_counter() - started, 2))
    load_seed(product, marketplace)
    settings = Settings(product_url=product, marketplace_url=marketplace, log_format=log_format,
                        connect_retry_s=0)
    prod, before = read_tables(product, marketplace)
    reports = []
    for dry_run in (True, False):
        run_id = new_run_id()
        report = Report(run_id=run_id, mode="dry-run" if dry_run else "apply")
        reports.append(run_reconcile(settings, RunOptions(dry_run=dry_run), get_logger(run_id=run_id), report))
    _, after = read_tables(product, marketplace)
    rows = table_rows(prod, before, after)
    log.info("demo.table", rows=rows)
    print("\n" + render_table(rows, reports[-1]) + "\n", file=sys.stderr)
    return reports


def _say_kept(server: Any, log: Any) -> None:
    log.info("demo.kept", workdir=server.workdir, stop_command=server.stop_command())
    print(kept_message(server, server.url("keybuzz"), server.url("keybuzz_backend")), file=sys.stderr)


def _run_demo(log_format: str, keep: bool) -> int:
    from reconcile.embedded import embedded_postgres

    configure_logging(log_format)
    log = get_logger(demo=True)
    started = time.perf_counter()
    with embedded_postgres(keep=keep) as server:
        try:
            reports = _seed_plan_run(server, log, log_format, started)
        except Exception:
            if keep:  # kept for a look at what went wrong: say where it is and how to stop it
                _say_kept(server, log)
            raise
        if keep:
            _say_kept(server, log)
    log.info("demo.done", seconds=round(time.perf_counter() - started, 2))
    return max(exit_code_of(r) for r in reports)
