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
from reconcile.db import DatabaseUrl, connect, engine_for, quietly, translate_db_errors
from reconcile.diff import UnsortedInput, diff
from reconcile.errors import DatabaseError, GuardTripped, LockHeld, ReconcileError
from reconcile.logs import log_internal_error
from reconcile.plan import Plan, build_plan
from reconcile.preflight import check_mapping_labels
from reconcile.report import ABORTED, LOCKED, Report, new_run_id, tally
from reconcile.scope import Scope
from reconcile.settings import Settings
from reconcile.snapshot import Snapshot, in_parallel, read_marketplace, read_product
from reconcile.tempfiles import temp_space
from reconcile.watchdog import PROBE_TIMEOUT_S, WatchedConnection

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
    scope: Scope
    dry_run: bool
    network_timeout_s: float = 30.0


@dataclass(frozen=True)
class RunOptions:
    dry_run: bool = False
    force: bool = False
    tenant_id: str | None = None  # restrict the run to one tenant (`sync`)
    take_lock: bool = True
    sync_lock: bool = False  # `sync`: many at once, never beside a whole run
    cancel: Cancellation | None = None  # lets a signal handler stop the run (rolled back)
    after_write: AfterWrite | None = None


@dataclass
class _Run:
    """What one run carries through its phases."""

    settings: Settings
    options: RunOptions
    report: Report
    log: Any
    cancel: Cancellation
    scope: Scope
    product_db: DatabaseUrl
    market_db: DatabaseUrl
    product: sa.Connection | None = None
    market: sa.Connection | None = None

    def engine(self, db: DatabaseUrl) -> sa.Engine:
        s = self.settings
        return engine_for(db, connect_timeout_s=s.connect_timeout_s, statement_timeout_ms=s.statement_timeout_ms,
                          lock_timeout_ms=s.lock_timeout_ms, network_timeout_s=s.network_timeout_s,
                          application_name=f"tenant-reconcile {self.report.mode} {self.report.shard} "
                                           f"{self.report.run_id[:8]}")


def _ms(seconds: float) -> float:
    return seconds * 1000.0


@contextmanager
def _transaction(conn: sa.Connection) -> Iterator[sa.RootTransaction]:
    """A transaction rolled back unless committed. When an error is already on its way out, the
    rollback is quiet: on a connection that died, it fails too, and must not replace the error."""
    tx = conn.begin()
    try:
        yield tx
    except BaseException:
        if tx.is_active:
            quietly(tx.rollback)
        raise
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
             source=product_db.display, target=market_db.display,
             product_from=settings.product_from, marketplace_from=settings.marketplace_from)
    cancel = options.cancel or Cancellation()
    try:
        scope = Scope(settings.shard, (options.tenant_id,) if options.tenant_id is not None else None)
        _run(_Run(settings, options, report, log, cancel, scope, product_db, market_db))
    except LockHeld as exc:
        report.status = LOCKED
        report.extra["error"] = str(exc)
        if exc.holder is not None:
            report.extra["lock_holder"] = exc.holder
    except GuardTripped as exc:
        report.status = ABORTED
        report.extra["error"] = str(exc)
    except ReconcileError as exc:
        if cancel.requested and not isinstance(exc, Cancelled):
            exc = Cancelled(f"run stopped ({cancel.reason}); transaction rolled back, nothing written")
        report.fail(str(exc), exc.exit_code)
    except UnsortedInput as exc:
        report.fail(f"{exc}; nothing was written", 1)
    except Exception as exc:  # unexpected: still one report, exit 1
        log_internal_error(log, exc)
        report.fail(f"internal error: {type(exc).__name__}", 1)
    report.timings_ms["total"] = _ms(time.perf_counter() - started)
    report.emit(log)
    return report


def _run(run: _Run) -> None:
    market_engine = run.engine(run.market_db)
    product_engine = run.engine(run.product_db)
    settings, options, cancel = run.settings, run.options, run.cancel
    with ExitStack() as stack:
        stack.callback(market_engine.dispose)
        stack.callback(product_engine.dispose)
        run.market = market = connect(market_engine, run.market_db, retry_s=settings.connect_retry_s,
                                      what="marketplace", log=run.log, cancel=cancel)
        stack.callback(quietly, market.close)
        cancel.register(market.connection.dbapi_connection)
        held: list[lock.Held] = []
        with translate_db_errors("cannot take the run lock", run.market_db):
            if options.take_lock and not options.dry_run:
                held = lock.acquire(market, settings.shard, settings.wait_lock_s, sync=options.sync_lock,
                                    cancel=cancel)
                run.log.info("lock.acquired", shard=settings.shard.label)
        try:
            with translate_db_errors("cannot read the marketplace enum labels", run.market_db):
                check_mapping_labels(market, settings.mapping)
                market.commit()
            run.product = connect(product_engine, run.product_db, retry_s=settings.connect_retry_s,
                                  what="product", log=run.log, cancel=cancel)
            stack.callback(quietly, run.product.close)
            cancel.register(run.product.connection.dbapi_connection)
            cancel.check()
            prepare = getattr(options.after_write, "prepare", None)
            if prepare is not None:
                # An extension may read on its own connection while the snapshot runs.
                stack.callback(prepare(market_engine, run.market_db, run.scope, cancel))
            _reconcile_in_transactions(run)
        finally:
            if held:
                _release(market, held)


def _release(market: sa.Connection, held: list[lock.Held]) -> None:
    if market.invalidated or market.closed:
        return  # the session is gone, and its locks with it; using it again would reconnect
    try:
        if market.in_transaction():
            market.rollback()
        lock.release(market, held)
        market.commit()
    except Exception:
        pass  # the session is gone, and the lock with it


def _cut(conn: sa.Connection, reason: str) -> Callable[[], None]:
    """Stop a call blocked on `conn` now (its result is no longer wanted)."""
    def stop() -> None:
        dbapi_connection = conn.connection.dbapi_connection
        if isinstance(dbapi_connection, WatchedConnection):
            dbapi_connection.abort(reason)
    return stop


def _snapshot(run: _Run, market: sa.Connection, product: sa.Connection) -> Snapshot:
    product = product.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
    where = run.scope.where()
    with translate_db_errors("snapshot failed", run.product_db), _transaction(product):
        return Snapshot(*in_parallel(
            lambda: read_product(product, run.settings.mapping, where, run.settings.skip_ids),
            lambda: _read_marketplace(market, where, run.market_db),
            _cut(product, "the marketplace snapshot failed"),
            _cut(market, "the product snapshot failed"),
            run.settings.network_timeout_s + PROBE_TIMEOUT_S + 10,
        ))


def _reconcile_in_transactions(run: _Run) -> None:
    assert run.market is not None and run.product is not None
    market, product, report, settings, cancel = run.market, run.product, run.report, run.settings, run.cancel
    t0 = time.perf_counter()
    with _transaction(market) as market_tx:
        if run.scope.ids is not None:
            with translate_db_errors("waiting for another sync of the same tenant failed", run.market_db):
                lock.lock_tenants(market, run.scope.ids)
        snapshot = _snapshot(run, market, product)
        try:
            cancel.check()
            report.source["tenants"] = report.total = snapshot.product.rows
            report.target["tenants"] = snapshot.marketplace.rows
            t1 = time.perf_counter()
            report.timings_ms["snapshot"] = _ms(t1 - t0)
            skip = frozenset(i.encode() for i in settings.skip_ids)
            with temp_space():
                plan = build_plan(diff(snapshot.product.lines(), snapshot.marketplace.lines(), skip),
                                  orphans_mode=settings.orphans, id_limit=settings.report_id_limit,
                                  check=cancel.check)
        finally:
            snapshot.close()
        plan.total = snapshot.product.rows
        plan.target_total = snapshot.marketplace.rows
        t2 = time.perf_counter()
        report.timings_ms["diff"] = _ms(t2 - t1)
        try:
            _stage_guard_write(run, market_tx, plan)
            report.timings_ms["apply"] = _ms(time.perf_counter() - t2)
        finally:
            plan.close()


def _stage_guard_write(run: _Run, market_tx: sa.RootTransaction, plan: Plan) -> None:
    assert run.market is not None and run.product is not None
    market, report, settings, options, cancel, log = (run.market, run.report, run.settings, run.options,
                                                      run.cancel, run.log)
    cancel.check()
    with translate_db_errors("staging the plan failed", run.market_db):
        apply.stage(market, plan)
    if not settings.shard.whole and plan.create_count:
        with translate_db_errors("checking slugs across shards failed", run.product_db):
            apply.cross_shard_slug_conflicts(run.product, market, plan, settings.mapping, settings.shard)
    quietly(run.product.close)  # read everything it had to: do not keep it idle through the writes
    verdict = guard.check(plan, max_archive=settings.max_archive, max_archive_ratio=settings.max_archive_ratio,
                          allow_empty_source=settings.allow_empty_source)
    if verdict is not None:
        if verdict.blocks(force=options.force):
            report.extra["guard"] = {"reason": verdict.reason, **verdict.figures}
            report.extra["planned"] = planned_counts(plan)
            tally(report, plan, None, log)  # counts and lists: what the run would have done
            raise GuardTripped(verdict.message)
        log.warning("guard.overridden", reason=verdict.reason, **verdict.figures)
    outcome = None
    announce = None
    with translate_db_errors("apply failed, transaction rolled back", run.market_db):
        cancel.check()
        if not options.dry_run:
            outcome = apply.write(market, plan)
        if options.after_write is not None:
            announce = options.after_write(HookContext(market, plan, report, log, run.scope, options.dry_run,
                                                       settings.network_timeout_s))
        cancel.check()  # the last point where stopping still means: nothing written
        if options.dry_run:
            market_tx.rollback()
        else:
            market_tx.commit()
    tally(report, plan, outcome, log)
    if announce is not None:
        announce()


def planned_counts(plan: Plan) -> dict[str, int]:
    return {"create": plan.create_count, "update": plan.updates.count, "archive": plan.archives.count,
            "orphans": plan.orphans, "errors": plan.errors.count, "skipped": plan.skipped}


def _read_marketplace(market: sa.Connection, where: Any, market_db: DatabaseUrl) -> Any:
    with translate_db_errors("snapshot failed", market_db):
        return read_marketplace(market, where)


def exit_code_of(report: Report) -> int:
    return int(report.extra.get("exit_code", report.exit_code))


__all__ = ["DatabaseError", "RunOptions", "exit_code_of", "run_reconcile"]
