"""The event half of `schedule --listen`: the sources publish tenant ids into one queue, and one
consumer turns each batch into one restricted run (`run --only` with the batch's ids).

Level-triggered, like a Kubernetes controller: an event only says "look at this tenant"; the run
re-reads both rows and does what the state asks, so a duplicated event costs a no-op and a lost
one is made good by the next full run. Nothing is lost on purpose:

1. the sources subscribe first, then one full run (`trigger: startup`) takes whatever changed
   while no listener ran (the informers' initial list);
2. a source that reconnects asks for a catch-up: the ids whose `updated_at` is within the time it
   was away (plus a margin), as one more batch; more than `FULL_RUN_ABOVE` of them is a full run
   instead (`trigger: catch-up`);
3. a batch that cannot run (the run lock held by a full run elsewhere, a database failure) goes
   back to the head of the queue and is retried with backoff;
4. the nightly full run catches whatever still slipped (e.g. a product row deleted while the only
   source was down: deletions leave no `updated_at`).

Batches and full runs take turns in the process's RunSlot, so a cron full run never fails because a
batch holds the run lock, and SIGTERM ends them the same way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from jobs.events.queue import Batch, EventQueue
from jobs.events.sources import SOURCES, Source, backoff
from jobs.process import RunSlot
from reconcile.db.cancel import Cancellation
from reconcile.db.engines import describe_db_error, engine_from_settings
from reconcile.report.model import FAILED, LOCKED, Report
from reconcile.settings import Settings

CATCH_UP_MARGIN_S = 60.0  # a connection may be dead a while (keepalive 30 s) before anyone notices
FULL_RUN_ABOVE = 10_000   # a catch-up this large is one full run, not ten batches
SUBSCRIBE_WAIT_S = 15.0   # the startup full run waits this long for every source to subscribe
JOIN_BOUND_S = 5.0

RunBatch = Callable[[Batch, Cancellation], Report]
RunFull = Callable[[str, Cancellation], Report]


class Listener:
    """Sources, queue and consumer; `start` and `join` are called by ScheduledRuns. `metrics`
    (jobs.metrics.ScheduleMetrics, or None) counts the events, batch sizes and lags; the runs
    themselves are recorded by whoever runs them (jobs.commands.scheduled_runs), locked and failed
    ones included."""

    def __init__(self, settings: Settings, log: Any, run_batch: RunBatch, run_full: RunFull,
                 metrics: Any = None, queue: EventQueue | None = None) -> None:
        self.settings = settings
        self.log = log.bind(component="listen")
        self.queue = queue or EventQueue(on_publish=self._received)
        self.metrics = metrics
        self._run_batch = run_batch
        self._run_full = run_full
        self._stop = threading.Event()
        self._full_wanted: str | None = "startup"
        self._threads: list[threading.Thread] = []
        self.sources: list[Source] = [SOURCES[name](settings, self.queue, self.log, self)
                                      for name in settings.listen]
        self.batches = 0

    def start(self, slot: RunSlot, stopping: Callable[[], bool]) -> None:
        """Subscribe every source, then the consumer (whose first run is the startup full run)."""
        self._slot = slot
        self._stopping = stopping
        for source in self.sources:
            self._spawn(lambda source=source: source.run(self._stop), f"listen-{source.name}")
        self._spawn(self._consume, "listen-consumer")
        self.log.info("listen.started", sources=list(self.settings.listen), window_ms=self.queue.window_s * 1000,
                      max_batch=self.queue.max_batch,
                      redis_channel=self.settings.redis_channel if "redis" in self.settings.listen else None,
                      poll_interval_s=self.settings.poll_interval_s if "poll" in self.settings.listen else None)

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stopping(self) -> bool:
        if self._stopping():
            self._stop.set()
        return self._stop.is_set()

    def join(self) -> None:
        """After the run slot is finished: the sources close their connections, the consumer ends."""
        self._stop.set()
        deadline = time.monotonic() + JOIN_BOUND_S
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        left = [t.name for t in self._threads if t.is_alive()]
        self.log.info("listen.stopped", batches=self.batches, pending=len(self.queue),
                      **({"still_closing": left} if left else {}))

    # The consumer ---------------------------------------------------------------------------------

    def _consume(self) -> None:
        self._wait_for_subscriptions()
        failures = 0
        while not self.stopping():
            if self._full_wanted is not None:
                ok = self._full_run(self._full_wanted)
            else:
                batch = self.queue.next_batch(lambda: self.stopping() or self._full_wanted is not None)
                if batch is None:
                    continue  # stopping, or a full run was asked for
                ok = self._batch(batch)
            failures = 0 if ok else failures + 1
            if failures:
                self._stop.wait(backoff(failures))

    def _wait_for_subscriptions(self) -> None:
        deadline = time.monotonic() + SUBSCRIBE_WAIT_S
        for source in self.sources:
            while not source.subscribed.wait(0.2):
                if self.stopping() or time.monotonic() >= deadline:
                    break
            if not source.subscribed.is_set() and not self.stopping():
                self.log.warning("listen.not_subscribed", source=source.name,
                                 detail="the startup run goes ahead; this source catches up once it connects")

    def _full_run(self, trigger: str) -> bool:
        report = self._slot.run(lambda cancel: self._run_full(trigger, cancel))
        if report is None:  # stopping
            return True
        if report.status in (LOCKED, FAILED):
            self.log.warning("listen.full_run_retry", trigger=trigger, status=report.status, run_id=report.run_id)
            return False
        if self._full_wanted == trigger:
            self._full_wanted = None
        return True

    def _batch(self, batch: Batch) -> bool:
        report = self._slot.run(lambda cancel: self._run_batch(batch, cancel))
        if report is None:  # stopping: the batch was not run; the next start's full run covers it
            self.queue.requeue(batch)
            return True
        self.batches += 1
        if report.status in (LOCKED, FAILED):
            self.queue.requeue(batch)
            self.log.warning("listen.batch_retry", size=len(batch.ids), status=report.status, run_id=report.run_id)
            return False
        if self.metrics is not None:
            done = time.monotonic()
            self.metrics.record_batch(len(batch.ids))
            for tenant_id, arrived in batch.arrived.items():
                self.metrics.record_lag(batch.source_of[tenant_id], done - arrived)
        return True

    # Catch-up after a reconnect ---------------------------------------------------------------------

    def catch_up(self, source: str, away_s: float) -> None:
        """Called by a source once it is subscribed again after `away_s` seconds without proof of
        life: the ids changed since then (plus a margin) as events of that source."""
        window = away_s + CATCH_UP_MARGIN_S
        try:
            ids = self._changed_within(window)
        except Exception as exc:  # the product DB is unreachable too: the next full run makes it good
            self.log.warning("listen.catch_up_failed", source=source, error=describe_db_error(exc))
            self.request_full_run("catch-up")
            return
        if len(ids) > FULL_RUN_ABOVE:
            self.request_full_run("catch-up")
        elif ids:
            self.queue.publish(source, ids)
        self.log.info("listen.catch_up", source=source, window_s=round(window, 1), tenants=len(ids),
                      full_run=len(ids) > FULL_RUN_ABOVE)

    def _received(self, source: str, count: int) -> None:
        if self.metrics is not None:
            self.metrics.record_events(source, count)

    def request_full_run(self, trigger: str) -> None:
        self._full_wanted = self._full_wanted or trigger
        self.queue.wake()

    def _changed_within(self, seconds: float) -> list[str]:
        engine = engine_from_settings(self.settings, self.settings.require_product(), "tenant-reconcile catch-up")
        try:
            with engine.connect() as conn:
                rows = conn.exec_driver_sql(
                    "SELECT id FROM tenants WHERE updated_at >= now() - make_interval(secs => %(seconds)s) "
                    "LIMIT %(limit)s", {"seconds": seconds, "limit": FULL_RUN_ABOVE + 1}).scalars().all()
                conn.rollback()
        finally:
            engine.dispose()
        return list(rows)
