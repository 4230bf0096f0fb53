"""One reconcile run: connect, lock, check, snapshot, diff, plan, stage, guard, write, hooks, commit,
report.

`plan` (a dry run) and `run` share every phase up to the writes; the dry run then rolls back.
`run_reconcile` never raises for an expected failure: every run ends with exactly one report.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from reconcile.db import lock
from reconcile.db.cancel import RUN_STOPPED, Cancellation, Cancelled
from reconcile.db.engines import connect, engine_from_settings, quietly, translate_db_errors
from reconcile.db.urls import DatabaseUrl
from reconcile.db.watchdog import PROBE_TIMEOUT_S, WatchedConnection
from reconcile.errors import CommitInDoubt, GuardTripped, LockHeld, ReconcileError
from reconcile.hooks import AfterWrite, HookContext, PrepareContext
from reconcile.pipeline import commit, guard, stage, write
from reconcile.pipeline.diff import UnsortedInput, diff
from reconcile.pipeline.plan import Plan, build_plan
from reconcile.pipeline.snapshot import Snapshot, in_parallel, read_marketplace, read_product
from reconcile.preflight import check_mapping_labels
from reconcile.report.logs import log_internal_error
from reconcile.report.model import ABORTED, LOCKED, Report, new_run_id
from reconcile.report.tally import Results, planned_counts, tally
from reconcile.scope import Scope
from reconcile.settings import Settings
from reconcile.tempfiles import local_io, temp_space

if TYPE_CHECKING:
    from reconcile.pipeline.planfile import SavedPlan  # saved plans are rare: imported when used


@dataclass(frozen=True)
class RunOptions:
    dry_run: bool = False
    force: bool = False
    # Restrict the run to these tenants (`sync`, `--only`, an event batch). Such a run locks like a
    # single-tenant writer: the run lock shared, and a transaction lock per tenant (up to
    # lock.MAX_TENANT_LOCKS tenants; a longer list takes the run lock exclusively, as a whole run).
    tenant_ids: tuple[str, ...] | None = None
    cancel: Cancellation | None = None  # lets a signal handler stop the run (rolled back)
    hooks: tuple[AfterWrite, ...] = ()
    plan_out: str | None = None           # a dry run: also save the plan there (planfile)
    saved_plan: SavedPlan | None = None   # apply exactly this saved plan instead of computing one
    # Whether the command takes --allow-empty-source (`run`, `plan`), for the guard's advice.
    takes_allow_empty_source: bool = False

    @property
    def per_tenant_locks(self) -> bool:
        return self.tenant_ids is not None and len(self.tenant_ids) <= lock.MAX_TENANT_LOCKS


@dataclass
class RunContext:
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
    stack: ExitStack = field(default_factory=ExitStack)
    started: float = field(default_factory=time.perf_counter)

    def engine(self, db: DatabaseUrl) -> sa.Engine:
        engine = engine_from_settings(self.settings, db, f"tenant-reconcile {self.report.mode} {self.report.shard} "
                                                         f"{self.report.run_id[:8]}")
        self.stack.callback(engine.dispose)
        return engine

    def connect(self, engine: sa.Engine, db: DatabaseUrl, what: str) -> sa.Connection:
        conn = connect(engine, db, retry_s=self.settings.connect_retry_s, what=what, log=self.log, cancel=self.cancel)
        self.stack.callback(quietly, conn.close)
        return conn

    def lap(self, phase: str, since: float) -> float:
        now = time.perf_counter()
        self.report.timings_ms[phase] = (now - since) * 1000.0
        return now


def run_reconcile(settings: Settings, options: RunOptions, log: Any, report: Report | None = None) -> Report:
    """Reconcile and return the report (already emitted). Never raises for an expected failure."""
    product_db, market_db = settings.require_product(), settings.require_marketplace()
    report = report or Report(run_id=new_run_id(), mode="dry-run" if options.dry_run else "apply",
                              shard=settings.shard.label, id_limit=settings.report_id_limit)
    report.set_databases(product_db, market_db)
    log.info("reconcile.start", mode=report.mode, shard=report.shard, source=product_db.display,
             target=market_db.display, product_from=settings.product_from, marketplace_from=settings.marketplace_from)
    run = RunContext(settings, options, report, log, options.cancel or Cancellation(),
                     Scope(settings.shard, options.tenant_ids), product_db, market_db)
    try:
        with run.stack:
            _execute(run)
    except Exception as exc:
        _record_failure(run, exc)
    report.timings_ms["total"] = (time.perf_counter() - run.started) * 1000.0
    report.emit(log)
    return report


def _record_failure(run: RunContext, exc: Exception) -> None:
    report = run.report
    if isinstance(exc, LockHeld):
        report.status, report.error, report.lock_holder = LOCKED, str(exc), exc.holder
    elif isinstance(exc, GuardTripped):
        report.status, report.error = ABORTED, str(exc)
    elif isinstance(exc, ReconcileError):
        if run.cancel.requested and not isinstance(exc, Cancelled | CommitInDoubt):
            exc = Cancelled(RUN_STOPPED.format(reason=run.cancel.reason))
        report.fail(str(exc), exc.exit_code)
    elif isinstance(exc, UnsortedInput):
        report.fail(f"{exc}; nothing was written", 1)
    else:  # unexpected: still one report, exit 1
        log_internal_error(run.log, exc)
        report.fail(f"internal error: {type(exc).__name__}", 1)


def _execute(run: RunContext) -> None:
    """Connect, lock, check the labels, start the hooks, then the transaction; the lock is
    released however that ends."""
    market_engine = run.engine(run.market_db)
    run.market = market = run.connect(market_engine, run.market_db, "marketplace")
    held = _take_run_lock(run)
    try:
        with translate_db_errors("cannot read the marketplace enum labels", run.market_db):
            check_mapping_labels(market, run.settings.mapping)
            market.commit()
        run.product = run.connect(run.engine(run.product_db), run.product_db, "product")
        run.cancel.check()
        for hook in run.options.hooks:
            # A hook may read on its own connection while the snapshot runs.
            run.stack.callback(hook.prepare(PrepareContext(market_engine, run.market_db, run.scope, run.cancel)))
        _reconcile_in_transaction(run)
    finally:
        if held:
            _release(market, held)


def _take_run_lock(run: RunContext) -> list[lock.Held]:
    if run.options.dry_run:
        return []  # a dry run writes nothing: it never waits for, nor blocks, a run
    assert run.market is not None
    with translate_db_errors("cannot take the run lock", run.market_db):
        held = lock.acquire(run.market, run.settings.shard, run.settings.wait_lock_s,
                            single=run.options.per_tenant_locks, cancel=run.cancel)
    run.log.info("lock.acquired", shard=run.settings.shard.label)
    return held


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


def _reconcile_in_transaction(run: RunContext) -> None:
    assert run.market is not None
    started = time.perf_counter()
    with _transaction(run.market) as market_tx:
        if run.options.per_tenant_locks and not run.options.dry_run:
            with translate_db_errors("waiting for another sync of the same tenants failed", run.market_db):
                lock.lock_tenants(run.market, run.scope.ids or ())
        saved = run.options.saved_plan
        plan, stale = (_saved_plan(run, saved, started) if saved else (_snapshot_and_plan(run, started), {}))
        try:
            applied_at = time.perf_counter()
            _stage_guard_write(run, market_tx, plan, stale)
            run.lap("apply", applied_at)
        finally:
            plan.close()


def _saved_plan(run: RunContext, saved: SavedPlan, started: float) -> tuple[Plan, dict[str, str]]:
    """A saved plan instead of a snapshot: its actions as they were planned, minus those the product
    no longer backs (read now, in one statement)."""
    assert run.product is not None
    run.report.plan_file = {"path": saved.path, "sha256": saved.sha256, "created_at": saved.created_at}
    with translate_db_errors("reading the product rows of the plan failed", run.product_db):
        from reconcile.pipeline import planfile

        stale = planfile.stale_actions(run.product, saved, run.settings.mapping, run.scope)
        run.product.rollback()
    plan = saved.to_plan()
    run.report.source["tenants"] = run.report.total = plan.total
    run.report.target["tenants"] = plan.target_total
    run.lap("diff", run.lap("snapshot", started))
    return plan, stale


def _snapshot_and_plan(run: RunContext, started: float) -> Plan:
    snapshot = _snapshot(run)
    try:
        run.cancel.check()
        run.report.source["tenants"] = run.report.total = snapshot.product.rows
        run.report.target["tenants"] = snapshot.marketplace.rows
        diffed_at = run.lap("snapshot", started)
        skip = frozenset(i.encode() for i in run.settings.skip_ids)
        with temp_space():
            plan = build_plan(diff(snapshot.product.lines(), snapshot.marketplace.lines(), skip),
                              orphans_mode=run.settings.orphans, check=run.cancel.check)
    finally:
        snapshot.close()
    plan.total, plan.target_total = snapshot.product.rows, snapshot.marketplace.rows
    run.lap("diff", diffed_at)
    return plan


def _snapshot(run: RunContext) -> Snapshot:
    assert run.market is not None and run.product is not None
    market = run.market
    product = run.product.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
    where = run.scope.where()
    with translate_db_errors("snapshot failed", run.product_db), _transaction(product):
        return Snapshot(*in_parallel(
            lambda: read_product(product, run.settings.mapping, where, run.settings.skip_ids),
            lambda: _read_marketplace(market, where, run.market_db),
            _cut(product, "the marketplace snapshot failed"),
            _cut(market, "the product snapshot failed"),
            run.settings.network_timeout_s + PROBE_TIMEOUT_S + 10,
        ))


def _read_marketplace(market: sa.Connection, where: Any, market_db: DatabaseUrl) -> Any:
    with translate_db_errors("snapshot failed", market_db):
        return read_marketplace(market, where)


def _cut(conn: sa.Connection, reason: str) -> Callable[[], None]:
    """Stop a call blocked on `conn` now (its result is no longer wanted)."""
    def stop() -> None:
        dbapi_connection = conn.connection.dbapi_connection
        if isinstance(dbapi_connection, WatchedConnection):
            dbapi_connection.abort(reason)
    return stop


def _stage_guard_write(run: RunContext, market_tx: sa.RootTransaction, plan: Plan, stale: dict[str, str]) -> None:
    assert run.market is not None and run.product is not None
    results = Results(plan, _stage(run, plan, stale))
    quietly(run.product.close)  # it has read all it had to: do not keep it idle through the writes
    if run.options.plan_out:
        _save_plan(run, results)
    _guard(run, results)
    with translate_db_errors("apply failed, transaction rolled back", run.market_db):
        run.cancel.check()
        if not run.options.dry_run:
            results.outcome = write.write(run.market, plan, results.staged)
        tables = stage.StagedTables(plan, results.staged)
        results.hooks = [hook(HookContext(run.market, plan, tables, run.log, run.scope, run.options.dry_run,
                                          run.settings.network_timeout_s)) for hook in run.options.hooks]
        run.cancel.check()  # the last point where stopping still means: nothing written
        if run.options.dry_run:
            market_tx.rollback()
        else:
            xid = run.market.exec_driver_sql("SELECT txid_current_if_assigned()").scalar()
    if not run.options.dry_run:
        commit.commit(market_tx, xid, run.settings, run.market_db, run.log)
    tally(run.report, results, run.log)
    for hook_result in results.hooks:
        if hook_result.after_commit is not None and not run.options.dry_run:
            hook_result.after_commit()


def _save_plan(run: RunContext, results: Results) -> None:
    assert run.options.plan_out is not None
    from reconcile.pipeline import planfile

    header = planfile.header(run.report.run_id, run.product_db.display, run.market_db.display,
                             run.settings.shard.label, run.scope.ids, run.settings.mapping)
    header["product"]["tenants"], header["marketplace"]["tenants"] = results.plan.total, results.plan.target_total
    document = planfile.plan_document(results.plan, results.staged, header)
    with local_io(f"saving the plan to {run.options.plan_out}"):
        sha256 = planfile.write_plan_file(run.options.plan_out, document)
    run.report.plan_file = {"path": run.options.plan_out, "sha256": sha256, "created_at": header["created_at"]}
    run.log.info("plan.saved", path=run.options.plan_out, sha256=sha256, actions=len(document["actions"]))


def _stage(run: RunContext, plan: Plan, stale: dict[str, str]) -> stage.Staged:
    assert run.market is not None and run.product is not None
    run.cancel.check()
    with translate_db_errors("staging the plan failed", run.market_db):
        staged = stage.stage(run.market, plan, stale)
    if not run.settings.shard.whole and staged.creates(plan):
        with translate_db_errors("checking slugs across shards failed", run.product_db):
            stage.cross_shard_slug_conflicts(run.product, run.market, staged, run.settings.mapping,
                                             run.settings.shard)
    return staged


def _guard(run: RunContext, results: Results) -> None:
    settings = run.settings
    verdict = guard.check(results.plan, max_archive=settings.max_archive, max_archive_ratio=settings.max_archive_ratio,
                          allow_empty_source=settings.allow_empty_source, restricted=run.scope.ids is not None,
                          advice=guard.Advice(settings.product_from, run.options.takes_allow_empty_source))
    if verdict is None:
        return
    if verdict.blocks(force=run.options.force):
        run.report.guard = {"reason": verdict.reason, **verdict.figures}
        run.report.planned = planned_counts(results)
        tally(run.report, results, run.log)  # counts and lists: what the run would have done
        raise GuardTripped(verdict.message)
    run.log.warning("guard.overridden", reason=verdict.reason, **verdict.figures)
