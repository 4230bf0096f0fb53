"""Engines and connections: the one factory (`engine_from_settings`), connecting with retries, and
database errors turned into one-line expected failures (exit 7)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from reconcile.db.cancel import RUN_STOPPED, Cancellation
from reconcile.db.urls import DatabaseUrl, scrub_credentials, url_with_secret
from reconcile.errors import DatabaseError

if TYPE_CHECKING:
    from reconcile.settings import Settings

# The server checks this often that the client of a running statement is still there, so the
# backend of a killed run stops (and drops its advisory lock) at once instead of at its next write.
CLIENT_CHECK_INTERVAL_MS = 250


def engine_for(db: DatabaseUrl, *, connect_timeout_s: int = 10, statement_timeout_ms: int = 0,
               lock_timeout_ms: int = 0, network_timeout_s: float = 30.0,
               application_name: str = "tenant-reconcile") -> sa.Engine:
    """An engine without a pool (a batch job opens few connections and must not keep any) whose
    every wait is bounded client side: connect by `connect_timeout_s`; reads and writes by TCP
    keepalives, `tcp_user_timeout` and the watchdog, all from `network_timeout_s`."""
    from reconcile.db.watchdog import watched_connection_class

    options = "-c timezone=UTC"
    if statement_timeout_ms:
        options += f" -c statement_timeout={int(statement_timeout_ms)}"
    if lock_timeout_ms:
        options += f" -c lock_timeout={int(lock_timeout_ms)}"
    network_s = max(float(network_timeout_s), 1.0)
    engine = sa.create_engine(
        db.url,
        poolclass=NullPool,
        hide_parameters=True,
        connect_args={
            "connect_timeout": int(connect_timeout_s),
            "options": options,
            "application_name": application_name,
            "client_encoding": "UTF8",
            "keepalives": 1,
            "keepalives_idle": max(1, int(network_s / 3)),
            "keepalives_interval": max(1, int(network_s / 6)),
            "keepalives_count": 3,
            "tcp_user_timeout": int(network_s * 1000),
            "connection_factory": watched_connection_class(url_with_secret(db.url), db.display, network_s,
                                                           connect_timeout_s),
        },
    )
    sa.event.listen(engine, "connect", lambda dbapi_connection, _record: _on_connect(dbapi_connection, db))
    return engine


def engine_from_settings(settings: Settings, db: DatabaseUrl, application_name: str = "tenant-reconcile") -> sa.Engine:
    """The one way every command gets an engine: the run's timeouts, the watchdog and the session
    settings all come from `settings`."""
    return engine_for(db, connect_timeout_s=settings.connect_timeout_s,
                      statement_timeout_ms=settings.statement_timeout_ms, lock_timeout_ms=settings.lock_timeout_ms,
                      network_timeout_s=settings.network_timeout_s, application_name=application_name)


def _on_connect(dbapi_connection: Any, db: DatabaseUrl) -> None:
    """Session settings that cannot go in the startup options: one that depends on the server
    version (an unknown one would refuse the login), and the schema of a Prisma URL, bound as a
    parameter and quoted as Prisma quotes it (`schema=MySchema` is "MySchema")."""
    with dbapi_connection.cursor() as cur:
        if dbapi_connection.server_version >= 140000:
            cur.execute(f"SET client_connection_check_interval = {CLIENT_CHECK_INTERVAL_MS}")
        if db.search_path:
            cur.execute("SELECT set_config('search_path', quote_ident(%s), false)", (db.search_path,))
    dbapi_connection.commit()  # end the implicit transaction: isolation levels are set outside one


def quietly(action: Any) -> None:
    """Run a cleanup step (rollback, close) whose failure must not hide the error being handled:
    on a connection that is already gone, these raise too."""
    with suppress(Exception):
        action()


def describe_db_error(exc: BaseException, db: DatabaseUrl | None = None) -> str:
    """First line of a driver error, without SQL, parameters or credentials."""
    orig = getattr(exc, "orig", None) or exc
    message = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return db.scrub(message) if db else scrub_credentials(message)


def driver_errors() -> tuple[type[BaseException], ...]:
    """What a database call raises when the database (or the way to it) fails."""
    import psycopg2

    return sa.exc.DBAPIError, sa.exc.PendingRollbackError, sa.exc.ResourceClosedError, psycopg2.Error


def error_cause(exc: BaseException, db: DatabaseUrl) -> str:
    """Why a call on `db` failed, in one line: the watchdog's reason when it cut the connection."""
    from reconcile.db.watchdog import WATCHDOG

    return WATCHDOG.cut_reason(db.display) or describe_db_error(exc, db)


@contextmanager
def translate_db_errors(what: str, db: DatabaseUrl) -> Iterator[None]:
    """Turn driver errors into DatabaseError (exit 7) naming the database, never its password."""
    try:
        yield
    except driver_errors() as exc:
        raise DatabaseError(f"{what} ({db.display}): {error_cause(exc, db)}") from exc


_PERMANENT = ("password authentication failed", "does not exist", "no pg_hba.conf entry",
              "authentication failed", "permission denied", "role ")


def _transient(exc: BaseException) -> bool:
    """Worth retrying: refused, timed out, starting up, too many clients. Not: bad credentials/db."""
    if not isinstance(exc, sa.exc.OperationalError):
        return False
    text = str(getattr(exc, "orig", exc)).lower()
    return not any(marker in text for marker in _PERMANENT)


def connect(engine: sa.Engine, db: DatabaseUrl, *, retry_s: float, what: str, log: Any = None,
            cancel: Any = None) -> sa.Connection:
    """Connect, retrying transient failures with exponential backoff for at most `retry_s` seconds
    in all (the last wait is cut short so the bound holds). A stop request (`cancel`, a
    Cancellation) ends the waiting between attempts at once."""
    import tenacity

    deadline = time.monotonic() + retry_s

    def give_up(state: tenacity.RetryCallState) -> bool:
        stopping = cancel is not None and cancel.requested
        return stopping or retry_s <= 0 or time.monotonic() >= deadline

    def wait(state: tenacity.RetryCallState) -> float:
        backoff = min(0.25 * 2 ** (state.attempt_number - 1), 4.0)
        return max(0.0, min(backoff, deadline - time.monotonic()))

    def announce(state: tenacity.RetryCallState) -> None:
        if log is not None and state.outcome is not None:
            log.warning("db.retry", database=what, db=db.display, attempt=state.attempt_number,
                        wait_s=round(state.next_action.sleep if state.next_action else 0.0, 2),
                        error=describe_db_error(state.outcome.exception(), db))

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(_transient),
        wait=wait,
        stop=give_up,
        sleep=cancel.wait if cancel is not None else time.sleep,
        before_sleep=announce,
        reraise=True,
    )
    with translate_db_errors(f"cannot connect to the {what} database", db):
        conn = retrying(engine.connect)
    if cancel is not None:
        cancel.register(conn.connection.dbapi_connection)  # a stop interrupts what runs on it
    return conn


@contextmanager
def reading(settings: Settings, db: DatabaseUrl, what: str, *, cancel: Cancellation | None = None,
            stopped: str = RUN_STOPPED, doing: str | None = None) -> Iterator[sa.Connection]:
    """One short connection for reads (sync's and status's lookups, check), with the run's timeouts;
    errors are exit 7 (`doing` says what failed). With `cancel`, a stop request cuts it as it cuts a
    run's connections, and the read fails with `stopped`, not with how the cut looked."""
    engine = engine_from_settings(settings, db, "tenant-reconcile (read)")
    try:
        if cancel is not None:
            cancel.check(stopped)
        with connect(engine, db, retry_s=settings.connect_retry_s, what=what, cancel=cancel) as conn, \
                translate_db_errors(doing or f"reading the {what} database failed", db):
            yield conn
    except DatabaseError:
        if cancel is not None:
            cancel.check(stopped)
        raise
    finally:
        engine.dispose()
