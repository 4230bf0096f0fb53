"""What `schedule --metrics-port` serves: /metrics (Prometheus text, from a registry of its own) and
/healthz, for Prometheus to scrape the long-running process. (A one-shot `run` cannot be scraped: it
pushes to a Pushgateway instead, reconcile.metrics.)

Every run of the process is recorded once its report is out: the cron's full runs and, under
`--listen`, the startup and catch-up full runs (`scope="full"`) and the event batches
(`scope="event"`). The events themselves are counted by source as they arrive, and each tenant of a
committed batch observes its lag, from the event's arrival to the batch's commit.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from reconcile.actions import COUNT_KEYS
from reconcile.errors import ConfigError
from reconcile.report.model import STATUS_EXIT_CODES

if TYPE_CHECKING:
    from reconcile.report.model import Report

FULL, EVENT = "full", "event"
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)
STOP_BOUND_S = 2.0


def scope_of(trigger: str) -> str:
    return EVENT if trigger == EVENT else FULL


class ScheduleMetrics:
    """The metric families of one `schedule` process, in a registry of their own (never the global
    default one, so nothing else in the process leaks into the answer). `triggers` and `sources`
    are the values this process can produce: their series exist from the start at 0, so that
    `increase()` sees the first run or event, and a dashboard shows 0 rather than nothing."""

    def __init__(self, triggers: Iterable[str], sources: Iterable[str] = ()) -> None:
        disable_created_metrics()  # no `*_created` series: nothing reads them, and they double the series
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        Gauge("tenant_reconcile_scheduler_start_time_seconds", "When this schedule process started",
              registry=registry).set(time.time())
        self.runs = Counter("tenant_reconcile_runs", "Runs by status and by what started them",
                            ["status", "trigger"], registry=registry)
        self.actions = Counter("tenant_reconcile_actions", "Tenants per outcome, summed over completed runs",
                               ["action"], registry=registry)
        self.duration = Histogram("tenant_reconcile_run_duration_seconds", "Wall time of a run", ["scope"],
                                  buckets=DURATION_BUCKETS, registry=registry)
        self.last_run = Gauge("tenant_reconcile_last_run_timestamp_seconds", "When the last run ended",
                              ["scope"], registry=registry)
        self.last_status = Gauge("tenant_reconcile_last_run_status",
                                 "1 for the last run's status, 0 for the others", ["scope", "status"],
                                 registry=registry)
        self.last_success = Gauge("tenant_reconcile_last_success_timestamp_seconds",
                                  "When the last completed run (success or partial) ended", ["scope"],
                                  registry=registry)
        for trigger in triggers:
            for status in STATUS_EXIT_CODES:
                self.runs.labels(status=status, trigger=trigger)
        for key in COUNT_KEYS:
            self.actions.labels(action=key)
        self.sources = tuple(sources)
        if self.sources:
            self._event_families(registry)

    def _event_families(self, registry: CollectorRegistry) -> None:
        self.events = Counter("tenant_reconcile_events", "Change events received, by source", ["source"],
                              registry=registry)
        self.batch_size = Histogram("tenant_reconcile_event_batch_size", "Tenants per committed event batch",
                                    buckets=BATCH_BUCKETS, registry=registry)
        self.lag = Histogram("tenant_reconcile_event_lag_seconds",
                             "From a change event's arrival to the commit of the batch that synced it",
                             ["source"], buckets=LAG_BUCKETS, registry=registry)
        for source in self.sources:
            self.events.labels(source=source)
            self.lag.labels(source=source)

    def record_run(self, report: Report) -> None:
        scope = scope_of(report.trigger)
        now = time.time()
        self.runs.labels(status=report.status, trigger=report.trigger).inc()
        self.duration.labels(scope=scope).observe(report.timings_ms.get("total", 0.0) / 1000.0)
        if report.completed:  # an aborted run's counts are what it would have done: nothing was
            for key in COUNT_KEYS:
                self.actions.labels(action=key).inc(report.counts.get(key, 0))
            self.last_success.labels(scope=scope).set(now)
        for status in STATUS_EXIT_CODES:
            self.last_status.labels(scope=scope, status=status).set(1 if status == report.status else 0)
        self.last_run.labels(scope=scope).set(now)

    def record_events(self, source: str, count: int) -> None:
        self.events.labels(source=source).inc(count)

    def record_batch(self, size: int) -> None:
        self.batch_size.observe(size)

    def record_lag(self, source: str, seconds: float) -> None:
        self.lag.labels(source=source).observe(seconds)


class MetricsServer:
    """prometheus-client's WSGI exposition of `registry` on /metrics, beside /healthz (200 while
    `healthy()`, else 503), served by prometheus-client's threading WSGI server in a daemon thread."""

    def __init__(self, registry: CollectorRegistry, healthy: Callable[[], bool]) -> None:
        from prometheus_client import make_wsgi_app

        self._metrics_app = make_wsgi_app(registry)
        self._healthy = healthy
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics_app(environ, start_response)
        if path == "/healthz":
            ok = self._healthy()
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"ok\n" if ok else b"stopping\n"]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: /metrics and /healthz are served here\n"]

    def start(self, host: str, port: int) -> MetricsServer:
        """Listen on host:port, or raise a ConfigError (exit 2) naming the port and the OS's reason."""
        from wsgiref.simple_server import WSGIRequestHandler, make_server

        from prometheus_client.exposition import ThreadingWSGIServer

        class Quiet(WSGIRequestHandler):
            def log_message(self, *args: Any) -> None:  # stdout is JSON lines; no access log
                pass

        family, address = _address(host, port)

        class Server(ThreadingWSGIServer):
            address_family = family

        try:
            self._server = make_server(address, port, self._app, Server, handler_class=Quiet)
        except OSError as exc:
            raise ConfigError(_bind_error(host, port, exc)) from None
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening; a scrape still being answered is a daemon thread and cannot hold the exit."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()  # returns within serve_forever's poll interval (0.5 s)
        server.server_close()
        if self._thread is not None:
            self._thread.join(STOP_BOUND_S)


def _address(host: str, port: int) -> tuple[socket.AddressFamily, str]:
    """The family and address to bind: IPv6 for '::' and IPv6 literals, whatever a name resolves to."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"metrics host {host} cannot be resolved to listen on: {exc.strerror}") from None
    family, _, _, _, sockaddr = infos[0]
    return family, str(sockaddr[0])


def _bind_error(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"metrics port {port} on {host} is already in use by another process"
    reason = exc.strerror or type(exc).__name__
    return f"metrics port {port} cannot be opened on {host}: {reason}"

