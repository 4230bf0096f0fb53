"""Product commit -> marketplace commit lag, per change.

The benchmark's marketplace gets a trigger that announces every row written to "Tenant"
(`pg_notify('bench_written', id TAB name TAB status)`); PostgreSQL delivers notifications when the
writing transaction commits, so a connection LISTENing there (the `Observer`, a thread of the
harness) learns each marketplace commit as it happens and stamps it with the monotonic clock, the
clock the load generator stamped each product commit with.

A change is delivered by the first marketplace write of its tenant that shows it or a later change
of the same tenant (batches coalesce): a name `b<k>` with k >= the change's number, or the status
CLOSED (an archive is a tenant's last change). A change nothing delivers before the drain timeout
is lost.
"""

from __future__ import annotations

import math
import re
import select
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import psycopg2

CHANNEL = "bench_written"
MARKETPLACE_TRIGGER_SQL = f"""
CREATE OR REPLACE FUNCTION bench_written() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('{CHANNEL}', NEW.id || E'\\t' || NEW.name || E'\\t' || NEW.status::text);
  RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS bench_written ON "Tenant";
CREATE TRIGGER bench_written AFTER INSERT OR UPDATE ON "Tenant" FOR EACH ROW EXECUTE FUNCTION bench_written();
"""
_TOKEN = re.compile(r"b(\d+)")
FINAL = math.inf


@dataclass(frozen=True)
class SentChange:
    seq: int
    kind: str
    tenant_id: str
    due: float
    commit: float


def read_changes(path: str) -> list[SentChange]:
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            seq, kind, tenant_id, due, commit = line.rstrip("\n").split("\t")
            out.append(SentChange(int(seq), kind, tenant_id, float(due), float(commit)))
    return out


def version(name: str, status: str) -> float:
    """How far a marketplace row has come: the change number its name carries, FINAL once closed."""
    if status == "CLOSED":
        return FINAL
    match = _TOKEN.fullmatch(name)
    return float(match[1]) if match else -1.0


@dataclass
class Observer:
    """LISTEN on the marketplace; every notification as (arrival, tenant id, version)."""

    dsn: str
    seen: list[tuple[float, str, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _ready: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    error: str | None = None

    def start(self) -> Observer:
        self._thread = threading.Thread(target=self._run, name="observer", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError(f"the marketplace observer did not start: {self.error}")
        return self

    def _run(self) -> None:
        try:
            conn = psycopg2.connect(self.dsn, application_name="bench-observer")
        except psycopg2.Error as exc:
            self.error = str(exc)
            return
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f"LISTEN {CHANNEL}")
            self._ready.set()
            while not self._stop.is_set():
                if select.select([conn], [], [], 0.2)[0]:
                    conn.poll()
                    now = time.monotonic()
                    for note in conn.notifies:
                        tenant_id, name, status = note.payload.split("\t")
                        self.seen.append((now, tenant_id, version(name, status)))
                    conn.notifies.clear()
        except psycopg2.Error as exc:
            self.error = str(exc)
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


def delivery_times(changes: list[SentChange], seen: list[tuple[float, str, float]]) -> list[float | None]:
    """For each change (in order), the monotonic time it was delivered at, or None."""
    writes: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for arrived, tenant_id, ver in seen:
        writes[tenant_id].append((arrived, ver))
    delivered: dict[int, float] = {}
    by_tenant: dict[str, list[SentChange]] = defaultdict(list)
    for change in changes:
        by_tenant[change.tenant_id].append(change)
    for tenant_id, own in by_tenant.items():
        own.sort(key=lambda c: c.seq)
        pending = 0
        reached = -1.0
        for arrived, ver in sorted(writes.get(tenant_id, ())):
            reached = max(reached, ver)
            while pending < len(own) and own[pending].seq <= reached:
                delivered[own[pending].seq] = arrived
                pending += 1
    return [delivered.get(c.seq) for c in changes]


def percentile(sorted_values: list[float], share: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(share * len(sorted_values)))
    return sorted_values[rank - 1]


def lag_summary(changes: list[SentChange], times: list[float | None]) -> dict[str, Any]:
    lags = sorted(t - c.commit for c, t in zip(changes, times, strict=True) if t is not None)
    lost = [c for c, t in zip(changes, times, strict=True) if t is None]

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 1)

    return {"sent": len(changes), "delivered": len(lags), "lost": len(lost),
            "lost_examples": [f"{c.kind} {c.tenant_id} b{c.seq}" for c in lost[:5]],
            "lag_ms": {"p50": ms(percentile(lags, 0.50)), "p95": ms(percentile(lags, 0.95)),
                       "p99": ms(percentile(lags, 0.99)), "max": ms(lags[-1] if lags else None),
                       "mean": ms(sum(lags) / len(lags) if lags else None)}}
