"""One reconcile run: lock, snapshot, diff, plan, stage, guard, write, commit, report.

`plan` (dry run) and `run` share every step up to `apply.write`; the dry run then rolls back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from reconcile import apply, guard, lock
from reconcile.cancel import Cancellation, Cancelled
from reconcile.db import DatabaseUrl, connect, engine_for, translate_db_errors
from reconcile.diff import UnsortedInput, diff
from reconcile.errors import DatabaseError, GuardTripped, LockHeld, ReconcileError
from reconcile.plan import Plan, build_plan
from reconcile.report import ABORTED, LOCKED, Report, new_run_id, tally
from reconcile.settings import Settings
from reconcile.shard import Shard
from reconcile.snapshot import Snapshot, in_parallel, read_marketplace, read_product

# A hook run inside the marketplace transaction after the tenant writes (inbound addresses use
# it), in dry runs too (it must then write nothing). It may return a callable to run after the
# commit, to log events that describe committed work.
AfterWrite = Callable[["HookContext"], "Callable[[], None] | None"]


@dataclass(frozen=True)
class HookContext:
    conn: sa.Connection
    plan: Plan
    report: Report
    log: Any
    shard: Shard
    tenant_id: str | None
    dry_run: bool

    def scope(self, column: str = "id") -> str:
        """SQL predicate restricting `column` to the run's shard / tenant."""
        return scope_predicate(self.shard, self.tenant_id, column)


@dataclass(frozen=True)
class RunOptions:
    dry_run: bool = False
    force: bool = False
    tenant_id: str | None = None  # restrict the run to one tenant (`sync`)
    take_lock: bool = True
    sync_lock: bool = False  # `sync`: many at once, never beside a whole run
    cancel: Cancellation | None = None  # lets a signal handler stop the run (rolled back)
    after_write: AfterWrite | None = None


def _ms(seconds: float) -> float:
    return seconds * 1000.0


def scope_predicate(shard: Shard, tenant_id: str | None, column: str = "id") -> str:
    """SQL restricting `column` (a tenant id) to the run's shard and, for `sync`, its one tenant."""
    predicate = shard.sql_predicate(column)
    if tenant_id is not None:
        literal = "'" + tenant_id.replace("'", "''") + "'"
        predicate = f"{column} = {literal}" if shard.whole else f"({predicate}) AND {column} = {literal}"
    return predicate


@contextmanager
def _transaction(conn: sa.Connection) -> Iterator[sa.RootTransaction]:
    tx = conn.begin()
    try:
        yield tx
    finally:
        if tx.is_active:
            tx.rollback()


def run_reconcile(settings: Settings, options: RunOptions, log: Any, report: Report | None = None) -> Report:
    """Reconcile and return the report (already emitted). Never raises for an expected failure."""
    product_db = settings.require_product()
    market_db = settings.require_marketplace()
    report = report or Report(run_id=new_run_id(), mode="dry-run" if options.dry_run else "apply",
                              shard=settings.shard.label, id_limit=settings.report_id_limit)
    report.set_databases(product_db, market_db)
    started = time.perf_counter()
    log.info("reconcile.start", mode=report.mode, shard=report.shard,
             source=product_db.display, target=market_db.display)
    try:
        _run(settings, options, report, product_db, market_db, log)
    except LockHeld as exc:
        report.status = LOCKED
        report.extra["error"] = str(exc)
    except GuardTripped as exc:
        report.status = ABORTED
        report.extra["error"] = str(exc)
    except ReconcileError as exc:
        if options.cancel is not None and options.cancel.requested and not isinstance(exc, Cancelled):
            exc = Cancelled(f"run stopped ({options.cancel.reason}); transaction rolled back, nothing written")
        report.fail(str(exc), exc.exit_code)
    except UnsortedInput as exc:
        report.fail(f"{exc}; nothing was written", 1)
    except Exception as exc:  # unexpected: still one report, exit 1
        log.exception("reconcile.internal_error")
        report.fail(f"internal error: {type(exc).__name__}", 1)
    report.timings_ms["total"] = _ms(time.perf_counter() - started)
    report.emit(log)
    return report


def _run(settings: Settings, options: RunOptions, report: Report, product_db: DatabaseUrl,
         market_db: DatabaseUrl, log: Any) -> None:
    engine_args = {"connect_timeout_s": settings.connect_timeout_s,
                   "statement_timeout_ms": settings.statement_timeout_ms,
                   "lock_timeout_ms": settings.lock_timeout_ms}
    market_engine = engine_for(market_db, **engine_args)
    product_engine = engine_for(product_db, **engine_args)
    predicate = scope_predicate(settings.shard, options.tenant_id)
    with ExitStack() as stack:
        stack.callback(market_engine.dispose)
        stack.callback(product_engine.dispose)
        cancel = options.cancel or Cancellation()
        market = stack.enter_context(connect(market_engine, market_db, retry_s=settings.connect_retry_s,
                                             what="marketplace", log=log))
        cancel.register(market.connection.dbapi_connection)
        held: list[lock.Held] = []
        if options.take_lock and not options.dry_run:
            with translate_db_errors("cannot take the run lock", market_db):
                held = lock.acquire(market, settings.shard, settings.wait_lock_s, sync=options.sync_lock,
                                    check=cancel.check)
                market.commit()
            log.info("lock.acquired", shard=settings.shard.label)
        product = stack.enter_context(connect(product_engine, product_db, retry_s=settings.connect_retry_s,
                                              what="product", log=log))
        cancel.register(product.connection.dbapi_connection)
        cancel.check()
        prepare = getattr(options.after_write, "prepare", None)
        if prepare is not None:
            # An extension may read on its own connection while the snapshot runs.
            stack.callback(prepare(market_engine, market_db, settings.shard, options.tenant_id, cancel))
        try:
            _reconcile_in_transactions(settings, options, report, product, market, predicate,
                                       product_db, market_db, log, cancel)
        finally:
            if held:
                _release(market, held)


def _release(market: sa.Connection, held: list[lock.Held]) -> None:
    try:
        if market.in_transaction():
            market.rollback()
        lock.release(market, held)
        market.commit()
    except sa.exc.DBAPIError:
        pass  # the session is gone, and the lock with it


def _reconcile_in_transactions(settings: Settings, options: RunOptions, report: Report,
                               product: sa.Connection, market: sa.Connection, predicate: str,
                               product_db: DatabaseUrl, market_db: DatabaseUrl, log: Any,
                               cancel: Cancellation) -> None:
    product = product.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
    t0 = time.perf_counter()
    with _transaction(market) as market_tx:
        with translate_db_errors("snapshot failed", product_db), _transaction(product):
            snapshot = Snapshot(*in_parallel(
                lambda: read_product(product, settings.mapping, predicate),
                lambda: _read_marketplace(market, predicate, market_db),
            ))
        try:
            cancel.check()
            report.source["tenants"] = report.total = snapshot.product.rows
            report.target["tenants"] = snapshot.marketplace.rows
            t1 = time.perf_counter()
            report.timings_ms["snapshot"] = _ms(t1 - t0)
            plan = build_plan(diff(snapshot.product.lines(), snapshot.marketplace.lines()),
                              orphans_mode=settings.orphans, id_limit=settings.report_id_limit)
        finally:
            snapshot.close()
        plan.total = snapshot.product.rows
        plan.target_total = snapshot.marketplace.rows
        t2 = time.perf_counter()
        report.timings_ms["diff"] = _ms(t2 - t1)
        try:
            cancel.check()
            with translate_db_errors("staging the plan failed", market_db):
                apply.stage(market, plan)
            if not settings.shard.whole and plan.create_count:
                with translate_db_errors("checking slugs across shards failed", product_db):
                    apply.cross_shard_slug_conflicts(product, market, plan, settings.mapping, settings.shard)
            verdict = guard.check(plan, max_archive=settings.max_archive,
                                  max_archive_ratio=settings.max_archive_ratio)
            if verdict is not None:
                if not options.force:
                    report.extra["guard"] = {"reason": verdict.reason, **verdict.figures}
                    report.extra["planned"] = planned_counts(plan)
                    tally(report, plan, None, log)  # counts and lists: what the run would have done
                    raise GuardTripped(f"safety guard: {verdict.reason}; nothing written (use --force)")
                log.warning("guard.overridden", reason=verdict.reason, **verdict.figures)
            outcome = None
            announce = None
            with translate_db_errors("apply failed, transaction rolled back", market_db):
                cancel.check()
                if not options.dry_run:
                    outcome = apply.write(market, plan)
                if options.after_write is not None:
                    announce = options.after_write(HookContext(market, plan, report, log, settings.shard,
                                                               options.tenant_id, options.dry_run))
                cancel.check()  # the last point where stopping still means: nothing written
                if options.dry_run:
                    market_tx.rollback()
                else:
                    market_tx.commit()
            report.timings_ms["apply"] = _ms(time.perf_counter() - t2)
            tally(report, plan, outcome, log)
            if announce is not None:
                announce()
        finally:
            plan.close()


def planned_counts(plan: Plan) -> dict[str, int]:
    return {"create": plan.create_count, "update": plan.updates.count, "archive": plan.archives.count,
            "orphans": plan.orphans, "errors": plan.errors.count}


def _read_marketplace(market: sa.Connection, predicate: str, market_db: DatabaseUrl) -> Any:
    with translate_db_errors("snapshot failed", market_db):
        return read_marketplace(market, predicate)


def exit_code_of(report: Report) -> int:
    return int(report.extra.get("exit_code", report.exit_code))


__all__ = ["DatabaseError", "RunOptions", "exit_code_of", "run_reconcile", "scope_predicate"]
