"""The trigger sources: each publishes tenant ids (hints) into the EventQueue, in a thread of its
own, reconnecting with backoff when its connection drops and keeping an idle connection alive
(HAProxy drops sessions idle for about a minute). After a reconnect it asks for a catch-up of what
changed while it was away.

- `pg`: LISTEN tenant_changed on the product DB (psycopg2's notifies); payload = the tenant id;
- `redis`: a Pub/Sub channel (redis-py); payload a bare id or `{"tenantId": "..."}`;
- `poll`: no product-side change at all: every interval, the ids whose `updated_at` is newer than
  the last seen, minus an overlap for clock and commit skew.
A payload that is not a tenant id is a `listen.bad_payload` warning, never a crash.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import threading
import time
from datetime import datetime, timedelta
from typing import Any, Protocol

import orjson

from jobs.events.queue import EventQueue
from reconcile.db.engines import describe_db_error, engine_from_settings
from reconcile.ids import tenant_id_problem
from reconcile.settings import Settings
from reconcile.trigger import CHANNEL
from reconcile.trigger import FUNCTION as TRIGGER_FUNCTION

KEEPALIVE_S = 30.0   # a statement (or PING) on an idle connection at least this often
BACKOFF_MAX_S = 30.0
POLL_OVERLAP_S = 10.0  # poll re-reads this far back: a transaction may commit after a later one's updated_at
POLL_PAGE = 10_000         # rows a poll reads at a time (keyset pages on updated_at, id)
POLL_FULL_RUN_ABOVE = 100_000  # more changed rows than this in one poll: one full run instead
_BARE_ID = re.compile(r"[^\s\x00-\x1f\x7f]+")


def backoff(attempt: int) -> float:
    return min(0.5 * 2 ** max(attempt - 1, 0), BACKOFF_MAX_S)


def tenant_id_of(payload: str | bytes) -> str | None:
    """The tenant id a payload names: a bare id (no spaces, no control characters), a JSON string,
    or `{"tenantId": "..."}`; None when it names none (a list, a number, another object, ...)."""
    try:
        text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
    except UnicodeDecodeError:
        return None
    text = text.strip()
    if text[:1] in ('{', '"', '['):
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
        if isinstance(value, dict):
            value = value.get("tenantId")
    elif _BARE_ID.fullmatch(text):
        value = text
    else:
        return None
    return value if isinstance(value, str) and tenant_id_problem(value) is None else None


class SourceOwner(Protocol):
    """What a source reports to (the Listener)."""

    def catch_up(self, source: str, away_s: float) -> None: ...

    def request_full_run(self, trigger: str) -> None: ...


class Source:
    """Connect, subscribe, read until the connection drops, back off, again; until `stop` is set.

    `alive_at` is the last moment the source knew it missed nothing (a notification read, a
    keepalive answered); every subscription after the first asks its owner for a catch-up since
    then. (A source that never connected asks for one since the listener started: the startup run
    may have gone ahead without it.)"""

    name = "source"
    catches_up = True

    def __init__(self, settings: Settings, queue: EventQueue, log: Any, owner: SourceOwner) -> None:
        self.settings = settings
        self.queue = queue
        self.log = log.bind(source=self.name)
        self.owner = owner
        self.subscribed = threading.Event()
        self.received = 0
        self.alive_at = time.monotonic()

    def run(self, stop: threading.Event) -> None:
        attempt = 0
        while not stop.is_set():
            try:
                with self.session() as session:
                    if attempt:
                        self.log.info("listen.reconnected", attempts=attempt)
                    if (attempt or self.subscribed.is_set()) and self.catches_up:
                        self.owner.catch_up(self.name, time.monotonic() - self.alive_at)
                    self.subscribed.set()
                    attempt = 0
                    self.alive_at = time.monotonic()
                    self.read(session, stop)
            except Exception as exc:  # any failure of the connection: report, back off, reconnect
                if stop.is_set():
                    break
                attempt += 1
                self.log.warning("listen.disconnected", attempt=attempt, retry_in_s=backoff(attempt),
                                 error=self.describe(exc))
                stop.wait(backoff(attempt))

    def publish(self, payloads: list[Any]) -> None:
        ids = []
        for payload in payloads:
            tenant_id = self.parse(payload)
            if tenant_id is None:
                self.log.warning("listen.bad_payload", detail="not a tenant id nor {\"tenantId\": ...}",
                                 length=len(payload) if isinstance(payload, str | bytes) else None)
            else:
                ids.append(tenant_id)
        self.received += len(ids)
        if ids:
            self.queue.publish(self.name, ids)

    def parse(self, payload: Any) -> str | None:
        return tenant_id_of(payload)

    def describe(self, exc: BaseException) -> str:
        return describe_db_error(exc)

    def session(self) -> Any:
        raise NotImplementedError

    def read(self, session: Any, stop: threading.Event) -> None:
        raise NotImplementedError


class PgSource(Source):
    name = "pg"
    _warned = False

    def parse(self, payload: Any) -> str | None:
        # The trigger sends the id as it is (spaces and all); someone else's NOTIFY may send JSON.
        if isinstance(payload, str) and not payload.lstrip().startswith("{"):
            return payload if tenant_id_problem(payload) is None else None
        return tenant_id_of(payload)

    @contextlib.contextmanager
    def session(self) -> Any:
        db = self.settings.require_product()
        engine = engine_from_settings(self.settings, db, "tenant-reconcile listen")
        raw = engine.raw_connection()
        try:
            conn = raw.dbapi_connection
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f"LISTEN {CHANNEL}")
                cur.execute("SELECT 1 FROM pg_trigger WHERE tgname = %s AND tgrelid = 'tenants'::regclass",
                            (TRIGGER_FUNCTION,))
                if cur.fetchone() is None and not self._warned:
                    self._warned = True
                    self.log.warning("listen.no_trigger", db=db.display, detail="no trigger announces tenant "
                                     "changes on this database: run install-trigger (or --print it for a DBA)")
            yield conn
        finally:
            with contextlib.suppress(Exception):
                raw.close()
            engine.dispose()

    def read(self, conn: Any, stop: threading.Event) -> None:
        while not stop.is_set():
            readable, _, _ = select.select([conn], [], [], 1.0)
            if not readable:
                if time.monotonic() - self.alive_at >= KEEPALIVE_S:
                    asked = time.monotonic()
                    with conn.cursor() as cur:
                        cur.execute("SELECT 1")  # keeps HAProxy from dropping the idle session
                    self.alive_at = asked
                continue
            conn.poll()  # raises on a dropped connection: the caller reconnects
            payloads = [n.payload for n in conn.notifies]
            conn.notifies.clear()
            self.alive_at = time.monotonic()
            self.publish(payloads)


class RedisSource(Source):
    name = "redis"

    @contextlib.contextmanager
    def session(self) -> Any:
        import redis

        url = self.settings.require_redis()
        client = redis.Redis.from_url(url.url, socket_connect_timeout=self.settings.connect_timeout_s,
                                      socket_timeout=self.settings.network_timeout_s, socket_keepalive=True,
                                      client_name=f"tenant-reconcile-listen-{os.getpid()}")
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.settings.redis_channel)
            yield pubsub
        finally:
            with contextlib.suppress(Exception):
                pubsub.close()
            with contextlib.suppress(Exception):
                client.close()

    def read(self, pubsub: Any, stop: threading.Event) -> None:
        pinged_at: float | None = None
        while not stop.is_set():
            if pinged_at is None and time.monotonic() - self.alive_at >= KEEPALIVE_S:
                pinged_at = time.monotonic()
                pubsub.ping()  # its PONG proves that nothing was missed until now
            message = pubsub.get_message(timeout=1.0)
            if not message:
                if pinged_at is not None and time.monotonic() - pinged_at > self.settings.network_timeout_s:
                    raise TimeoutError(f"no PONG within {self.settings.network_timeout_s:g}s")
                continue
            if message.get("type") == "pong":
                self.alive_at, pinged_at = pinged_at or self.alive_at, None
            elif message.get("type") == "message":
                self.alive_at = time.monotonic()
                self.publish([message["data"]])

    def describe(self, exc: BaseException) -> str:
        url = self.settings.redis_url
        text = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return url.scrub(text) if url is not None else text


class PollSource(Source):
    """`updated_at` newer than the last seen, minus an overlap; ids seen within the overlap with the
    same `updated_at` are not announced twice."""

    name = "poll"
    catches_up = False  # its own cursor (`updated_at` since the last seen) survives a reconnect

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._since: datetime | None = None
        self._seen: dict[tuple[str, datetime], None] = {}

    @contextlib.contextmanager
    def session(self) -> Any:
        db = self.settings.require_product()
        engine = engine_from_settings(self.settings, db, "tenant-reconcile listen")
        try:
            with engine.connect() as conn:
                if self._since is None:  # from now: what changed before is the initial full run's
                    self._since = conn.exec_driver_sql("SELECT now()").scalar()
                    conn.rollback()
                yield conn
        finally:
            engine.dispose()

    def read(self, conn: Any, stop: threading.Event) -> None:
        while not stop.is_set():
            self.poll_once(conn)
            stop.wait(self.settings.poll_interval_s)

    page_size = POLL_PAGE
    full_run_above = POLL_FULL_RUN_ABOVE

    def _changed_rows(self, conn: Any) -> list[Any] | None:
        """The rows changed since the last poll (minus the overlap), in pages ordered by (updated_at,
        id), or None when there are more than `full_run_above` of them."""
        assert self._since is not None
        rows: list[Any] = []
        floor = self._since - timedelta(seconds=POLL_OVERLAP_S)
        after: tuple[Any, str] = (floor, "")
        while True:
            page = conn.exec_driver_sql(
                "SELECT id, updated_at FROM tenants WHERE updated_at > %(floor)s "
                "AND (updated_at, id) > (%(after_at)s, %(after_id)s) ORDER BY updated_at, id LIMIT %(limit)s",
                {"floor": floor, "after_at": after[0], "after_id": after[1], "limit": self.page_size}).all()
            rows += page
            if len(rows) > self.full_run_above:
                return None
            if len(page) < self.page_size:
                return rows
            after = (page[-1].updated_at, page[-1].id)

    def poll_once(self, conn: Any) -> None:
        assert self._since is not None
        rows = self._changed_rows(conn)
        read_at = conn.exec_driver_sql("SELECT now()").scalar() if rows is None else None
        conn.rollback()  # no transaction left open between polls
        self.alive_at = time.monotonic()
        if rows is None:
            # More changed within one poll than batch runs should take: one full run instead, and
            # polling goes on from now.
            self.owner.request_full_run("catch-up")
            self._since, self._seen = read_at, {}
            self.log.info("listen.poll_overflow", above=self.full_run_above, detail="a full run instead of batches")
            return
        fresh = [(r.id, r.updated_at) for r in rows if (r.id, r.updated_at) not in self._seen]
        if fresh:
            self.publish([tenant_id for tenant_id, _ in fresh])
            self._seen.update(dict.fromkeys(fresh))
        if rows:
            self._since = max(self._since, rows[-1].updated_at)
            horizon = self._since.timestamp() - POLL_OVERLAP_S
            self._seen = {key: None for key in self._seen if key[1].timestamp() >= horizon}


SOURCES: dict[str, type[Source]] = {source.name: source for source in (PgSource, RedisSource, PollSource)}
