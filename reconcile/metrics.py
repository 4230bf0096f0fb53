"""Run metrics pushed to a Prometheus Pushgateway, for alerts such as "no success in 26 h".

POST (pushadd) rather than PUT: a failed run replaces the status and duration but leaves the last
success timestamp as it was, which is exactly what that alert reads.
"""

from __future__ import annotations

import time
from typing import Any

from reconcile.report import COUNT_KEYS, PARTIAL, STATUS_EXIT_CODES, SUCCESS, Report

JOB = "tenant_reconcile"
PUSH_TIMEOUT_S = 5.0


def push_report(url: str, report: Report, log: Any) -> bool:
    """Push the run's figures; a failure is a warning event, never a failed run."""
    from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway

    registry = CollectorRegistry()
    now = time.time()
    Gauge("tenant_reconcile_last_run_duration_seconds", "Wall time of the last run",
          registry=registry).set(report.timings_ms.get("total", 0.0) / 1000.0)
    Gauge("tenant_reconcile_last_run_timestamp_seconds", "When the last run ended",
          registry=registry).set(now)
    actions = Gauge("tenant_reconcile_last_run_actions", "Tenants per outcome in the last run", ["action"],
                    registry=registry)
    completed = report.status in (SUCCESS, PARTIAL)
    for key in COUNT_KEYS:  # an aborted run's counts are what it would have done: nothing was
        actions.labels(action=key).set(report.counts.get(key, 0) if completed else 0)
    status = Gauge("tenant_reconcile_last_run_status", "1 for the last run's status, 0 for the others",
                   ["status"], registry=registry)
    for name in STATUS_EXIT_CODES:
        status.labels(status=name).set(1 if name == report.status else 0)
    Gauge("tenant_reconcile_last_run_tenants", "Product tenants in scope in the last run",
          registry=registry).set(report.total)
    if completed and report.mode == "apply":
        # A partial run completed and applied everything it could; its row errors show in
        # tenant_reconcile_last_run_actions{action="errors"} and the status gauge.
        Gauge("tenant_reconcile_last_success_timestamp_seconds", "When the last completed run ended",
              registry=registry).set(now)
    try:
        pushadd_to_gateway(url, job=JOB, registry=registry, grouping_key={"shard": report.shard},
                           timeout=PUSH_TIMEOUT_S)
    except Exception as exc:  # the Pushgateway is optional: never fail a run over it
        log.warning("metrics.push_failed", pushgateway=_display(url), error=f"{type(exc).__name__}: {exc}"[:300])
        return False
    log.info("metrics.pushed", pushgateway=_display(url))
    return True


def _display(url: str) -> str:
    from reconcile.db import scrub_credentials

    return scrub_credentials(url)
