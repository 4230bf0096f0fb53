"""What the listener tests share: the real Redis on 127.0.0.1:6379 (or $RECONCILE_TEST_REDIS_URL),
a `schedule --listen` process on a pair of throw-away databases, and waiting for the marketplace
to show a state."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from reconcile.trigger import install_trigger
from tests.faults.harness import Proc
from tests.pgtools import Databases

REDIS_URL = os.environ.get("RECONCILE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IDLE_CRON = "0 2 * * 0"  # never due while a test runs (unless it is Sunday 02:00 UTC)
ARRIVES_WITHIN_S = 20.0  # generous: it proves "it arrives", the benchmark measures how fast


def redis_client() -> Any:
    """The real Redis, or a skip saying how to get one (CI sets RECONCILE_REQUIRE_REDIS=1: a failure)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("RECONCILE_REQUIRE_REDIS"):
            raise
        pytest.skip(f"no Redis at {REDIS_URL} ({type(exc).__name__}); start one or set RECONCILE_TEST_REDIS_URL")
    return client


def with_trigger(dbs: Databases) -> Databases:
    import structlog

    install_trigger(dbs.settings(), structlog.get_logger())
    return dbs


def listen(dbs: Databases, sources: str, *args: str, channel: str | None = None, started: bool = True,
           **env: str) -> Proc:
    """`schedule --listen SOURCES` (an idle cron), started and (unless `started` is False) past its
    startup full run."""
    channel = channel or f"test:{uuid.uuid4().hex}"
    proc = Proc("schedule", "--cron", IDLE_CRON, "--listen", sources, "--redis-channel", channel,
                "--poll-interval", "0.5", *args, env=dbs.env(**{"REDIS_URL": REDIS_URL, **env}))
    proc.channel = channel  # type: ignore[attr-defined]
    if started:
        wait_for_report(proc, "startup")
    return proc


def reports(proc: Proc, trigger: str | None = None) -> list[dict[str, Any]]:
    return [e for e in proc.events() if e.get("event") == "reconcile.report"
            and (trigger is None or e.get("trigger") == trigger)]


def wait_for_report(proc: Proc, trigger: str, count: int = 1, timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while len(found := reports(proc, trigger)) < count:
        if proc.proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{len(found)} of {count} {trigger} reports (exit {proc.proc.poll()}): "
                        f"{''.join(proc.lines)[-1500:]} {''.join(proc._stderr)[-800:]}")
        time.sleep(0.05)
    return found


def wait_until(what: str, condition: Callable[[], Any], proc: Proc | None = None,
               timeout: float = ARRIVES_WITHIN_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = "".join(proc.lines)[-2000:] if proc is not None else ""
            pytest.fail(f"{what}: not within {timeout:g}s. {tail}")
        time.sleep(0.05)


def market_row(dbs: Databases, tenant_id: str) -> dict[str, Any] | None:
    rows = dbs.sql("marketplace", 'SELECT id, name, plan::text AS plan, status::text AS status FROM "Tenant" '
                                  "WHERE id = :i", {"i": tenant_id})
    return dict(rows[0]._mapping) if rows else None


def events_of(proc: Proc, name: str) -> list[dict[str, Any]]:
    return [e for e in proc.events() if e.get("event") == name]


def stop(proc: Proc, deadline: float = 20) -> Any:
    import signal

    proc.signal(signal.SIGTERM)
    return proc.finish(deadline=deadline)
