"""Run metrics pushed to a Prometheus Pushgateway, for alerts such as "no success in 26 h".

POST (pushadd) rather than PUT: a failed run replaces the status and duration but leaves the last
success timestamp as it was, which is exactly what that alert reads.

The Pushgateway URL may carry `user:password@` (a gateway behind basic auth): those credentials are
taken out of the URL at load time, sent as an Authorization header, and never shown; the gateway is
always shown as `scheme://host:port`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from reconcile.errors import ConfigError

if TYPE_CHECKING:
    from reconcile.report.model import Report

JOB = "tenant_reconcile"
PUSH_TIMEOUT_S = 5.0
_DEFAULT_PORTS = {"http": 80, "https": 443}
_EXPECTED = "expected http://host:port, optionally with user:password@"


@dataclass(frozen=True)
class PushgatewayUrl:
    """A validated Pushgateway URL split into the URL to push to (no credentials) and the basic-auth
    credentials; `str()` and `repr()` are the display form, so it is safe to print."""

    url: str  # scheme://host[:port][/path], no credentials, no trailing slash
    display: str  # scheme://host:port
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, raw: str, where: str) -> PushgatewayUrl:
        """Validate `raw`; an error names `where` and never echoes the value (it may hold a password)."""
        text = raw.strip() if isinstance(raw, str) else ""
        if not text:
            raise ConfigError(f"{where} must be a non-empty URL ({_EXPECTED})")
        try:
            parts = urlsplit(text)
        except ValueError:  # e.g. an unbalanced '['
            raise ConfigError(f"{where} is not a valid URL ({_EXPECTED})") from None
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise ConfigError(f"{where} must be an http:// or https:// URL ({_EXPECTED})")
        # Two '@', or one outside the host part, or a query or fragment: a '/', '?', '#' or '@' of the
        # password was not percent-encoded, and the URL cannot be split into credentials and host.
        if parts.netloc.count("@") > 1 or "@" in parts.path or parts.query or parts.fragment:
            raise ConfigError(f"{where} must have no query or fragment, and a user name or password must "
                              "percent-encode '@', '/', '?' and '#' (%40 %2F %3F %23)")
        try:
            port = parts.port  # ValueError when not a number or out of range
        except ValueError:
            raise ConfigError(f"{where} has an invalid port ({_EXPECTED})") from None
        host = parts.hostname
        if not host:
            raise ConfigError(f"{where} names no host ({_EXPECTED})")
        if port == 0:
            raise ConfigError(f"{where} has an invalid port ({_EXPECTED})")
        shown_host = f"[{host}]" if ":" in host else host
        location = f"{shown_host}:{port}" if port is not None else shown_host
        username = unquote(parts.username) if parts.username is not None else None
        password = unquote(parts.password) if parts.password is not None else None
        # Positional, in field order: url, display, then the credentials.
        return cls(f"{scheme}://{location}{parts.path.rstrip('/')}",
                   f"{scheme}://{shown_host}:{port or _DEFAULT_PORTS[scheme]}", username, password)

    def __str__(self) -> str:
        return self.display

    def __repr__(self) -> str:
        return f"PushgatewayUrl({self.display})"

    def handler(self) -> Any:
        """prometheus_client's push handler: basic auth when the URL had credentials."""
        from prometheus_client.exposition import basic_auth_handler, default_handler

        if self.username is None and self.password is None:
            return default_handler
        username, password = self.username or "", self.password or ""

        def handle(url: str, method: str, timeout: float | None, headers: list[tuple[str, str]],
                   data: bytes) -> Any:
            return basic_auth_handler(url, method, timeout, headers, data, username, password)

        return handle

    def secrets(self) -> list[str]:
        return [s for s in (self.password, self.username) if s]


def push_report(gateway: PushgatewayUrl | str, report: Report, log: Any) -> bool:
    """Push the run's figures; a failure is a warning event, never a failed run."""
    from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway

    from reconcile.actions import COUNT_KEYS
    from reconcile.report.model import PARTIAL, STATUS_EXIT_CODES, SUCCESS

    if isinstance(gateway, str):
        gateway = PushgatewayUrl.parse(gateway, "pushgateway")
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
    Gauge("tenant_reconcile_last_run_tenants", "Tenants the last run counted (its report's total)",
          registry=registry).set(report.total)
    if completed and report.mode == "apply":
        # A partial run completed and applied everything it could; its row errors show in
        # tenant_reconcile_last_run_actions{action="errors"} and the status gauge.
        Gauge("tenant_reconcile_last_success_timestamp_seconds", "When the last completed run ended",
              registry=registry).set(now)
    try:
        pushadd_to_gateway(gateway.url, job=JOB, registry=registry, grouping_key={"shard": report.shard},
                           timeout=PUSH_TIMEOUT_S, handler=gateway.handler())
    except Exception as exc:  # the Pushgateway is optional: never fail a run over it
        log.warning("metrics.push_failed", pushgateway=gateway.display, error=push_error(exc, gateway.secrets()))
        return False
    log.info("metrics.pushed", pushgateway=gateway.display)
    return True


def push_error(exc: BaseException, secrets: list[str]) -> str:
    """The exception type and a detail that cannot carry the URL or its credentials: an HTTP status,
    or the OS error's own text (`strerror`), never `str(exc)` (urllib puts URLs there)."""
    from urllib.error import HTTPError, URLError

    detail = ""
    if isinstance(exc, HTTPError):
        detail = f"HTTP {exc.code}" + (f" {exc.reason}" if isinstance(exc.reason, str) else "")
    elif isinstance(exc, URLError):
        reason = exc.reason
        if isinstance(reason, BaseException):
            detail = type(reason).__name__ + (f": {reason.strerror}" if getattr(reason, "strerror", None) else "")
    elif isinstance(exc, TimeoutError):
        detail = "timed out"
    elif isinstance(exc, OSError) and exc.strerror:
        detail = exc.strerror
    if detail and any(piece in detail for secret in secrets
                      for piece in (secret[i:i + 4] for i in range(max(1, len(secret) - 3)))):
        detail = ""  # an HTTP reason phrase is the server's text: it could echo anything
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
