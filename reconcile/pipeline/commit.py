"""The commit of a run's one transaction, and what to say when its answer never arrives.

A connection lost during COMMIT (a failover, a reset, a stalled path cut by the watchdog) leaves
the outcome on the server: the transaction may have committed although the client saw an error.
Reporting "rolled back, nothing written" then would be false, so the transaction id read just
before the commit is looked up on a new connection (`txid_status`): committed means the run
succeeded after all, aborted means nothing was written. Still in progress means our session has
not seen the COMMIT yet (a stalled path): it is terminated, which settles the outcome. Anything
else (the server unreachable, a failover to a replica that never saw the transaction) is reported
as unknown: exit 7, and the next `plan` shows what the database holds.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from reconcile.db.copy import dbapi
from reconcile.db.engines import describe_db_error, driver_errors, engine_from_settings, error_cause
from reconcile.db.urls import DatabaseUrl
from reconcile.errors import CommitInDoubt, DatabaseError

if TYPE_CHECKING:
    from reconcile.settings import Settings

# The look-up happens while the run is ending (perhaps on SIGTERM, which must end it within 10 s).
LOOKUP_CONNECT_TIMEOUT_S = 3
TERMINATE_WAIT_S = 2.0  # how long the terminated session may take to end


def commit(tx: sa.RootTransaction, xid: int | None, settings: Settings, db: DatabaseUrl, log: Any) -> None:
    """Commit `tx`; when the connection is lost on the way, find out whether the server committed
    anyway. Returns when it did; raises DatabaseError (rolled back) or CommitInDoubt."""
    backend_pid = dbapi(tx.connection).info.backend_pid
    try:
        tx.commit()
        return
    except driver_errors() as exc:
        cause = error_cause(exc, db)
        lost = tx.connection.invalidated or bool(getattr(exc, "connection_invalidated", False))
        rolled_back = DatabaseError(f"commit failed, transaction rolled back ({db.display}): {cause}")
        if xid is None or not lost:
            # The server answered with an error (or nothing had been written): nothing is in doubt.
            raise rolled_back from exc
        outcome, detail = transaction_outcome(settings, db, xid, backend_pid)
    if outcome == "committed":
        log.warning("commit.confirmed", db=db.display, xid=xid, error=cause,
                    detail="the answer to COMMIT was lost; the server had committed the transaction")
        return
    if outcome == "aborted":
        raise rolled_back
    raise CommitInDoubt(
        f"the connection to {db.display} was lost during COMMIT ({cause}); whether the run's writes were "
        f"committed is unknown ({detail}): run `tenant-reconcile plan` to see what the marketplace holds")


def transaction_outcome(settings: Settings, db: DatabaseUrl, xid: int, backend_pid: int) -> tuple[str | None, str]:
    """`committed` or `aborted`, or None and why it could not be told, for transaction `xid`. A
    transaction still in progress belongs to our own session, whose COMMIT may still be on its way:
    that session is ended first (as the run's own role may), which makes the outcome final."""
    engine = engine_from_settings(_lookup_settings(settings), db, "tenant-reconcile (commit check)")
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            status = _status(conn, xid)
            if status == "in progress":
                conn.exec_driver_sql("SELECT pg_terminate_backend(%(pid)s)", {"pid": backend_pid})
                deadline = time.monotonic() + TERMINATE_WAIT_S
                while status == "in progress" and time.monotonic() < deadline:
                    time.sleep(0.05)  # the session rolls back as it ends
                    status = _status(conn, xid)
    except Exception as exc:  # unreachable, failed over to a server that never saw it, ...
        return None, f"checking it failed: {describe_db_error(exc, db)}"
    finally:
        engine.dispose()
    if status in ("committed", "aborted"):
        return status, status
    return None, f"the server says {status or 'nothing'} about it"


def _status(conn: sa.Connection, xid: int) -> str | None:
    return conn.exec_driver_sql("SELECT txid_status(%(xid)s)", {"xid": xid}).scalar()


def _lookup_settings(settings: Settings) -> Settings:
    from dataclasses import replace

    return replace(settings, connect_timeout_s=min(settings.connect_timeout_s, LOOKUP_CONNECT_TIMEOUT_S))
