"""The inbound hook: `prepare` finds the candidate tenants (the expensive, read-only aggregate) on a
connection of its own while the snapshot runs; the call then adds what the run itself creates or
reopens, and does the exact work for those tenants only, inside the write transaction. A row
changed by someone else in between is caught by the re-checks at insert time, or by the next run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import IO

from reconcile.db.copy import copy_out
from reconcile.db.engines import connect, translate_db_errors
from reconcile.db.watchdog import WatchedConnection
from reconcile.errors import DatabaseError
from reconcile.hooks import HookContext, HookResult, PrepareContext
from reconcile.inbound.candidates import AGGREGATE_SESSION, candidates_sql, connection_unique
from reconcile.inbound.ensure import ensure
from reconcile.settings import Settings
from reconcile.tempfiles import discard, temp_file, temp_space
from reconcile.threads import Worker

# The candidate scan is waited for at most this long once the run is done with it (its connection is
# cut first); while the run needs it, the watchdog and statement_timeout bound it.
SCAN_JOIN_BOUND_S = 15.0


def inbound_hook(settings: Settings, countries: tuple[str, ...] | None = None) -> InboundEnsurer | None:
    """The run's inbound hook when inbound countries are asked for, else None."""
    wanted = settings.inbound_countries if countries is None else countries
    if not wanted:
        return None
    assert all(len(c) == 2 and c.isalpha() and c.isupper() for c in wanted)  # validated by settings
    return InboundEnsurer(wanted, settings.inbound_domain, settings.connect_retry_s)


class InboundEnsurer:
    """An AfterWrite hook (reconcile.hooks)."""

    def __init__(self, countries: tuple[str, ...], domain: str, retry_s: float = 0.0) -> None:
        self.countries = countries
        self.domain = domain
        self.retry_s = retry_s
        self._candidates: IO[bytes] | None = None
        self._scan: Worker[IO[bytes]] | None = None
        self._connection: object | None = None

    def prepare(self, ctx: PrepareContext) -> Callable[[], None]:
        def scan() -> IO[bytes]:
            with connect(ctx.engine, ctx.db, retry_s=self.retry_s, what="marketplace", cancel=ctx.cancel) as conn, \
                    translate_db_errors("inbound scan failed", ctx.db), conn.begin():
                self._connection = conn.connection.dbapi_connection
                ctx.cancel.register(self._connection)
                unique = connection_unique(conn)
                for statement in AGGREGATE_SESSION:
                    conn.exec_driver_sql(statement)
                self._candidates = spool = temp_file()
                copy_out(conn, candidates_sql(ctx.scope, self.countries, unique), spool)
                return spool

        self._scan = Worker(scan, "inbound-scan").start()
        return self._close

    def _close(self) -> None:
        """After the run, however it ended: a scan still going is cut, then waited for (bounded)."""
        connection = self._connection
        try:
            if self._scan is not None and self._scan.alive and isinstance(connection, WatchedConnection):
                connection.abort("the run ended before the inbound scan")
            if self._scan is not None and not self._scan.join(SCAN_JOIN_BOUND_S):
                raise DatabaseError(f"the inbound scan did not finish within {SCAN_JOIN_BOUND_S:g}s after the run")
        finally:
            if self._candidates is not None:
                discard(self._candidates)

    def __call__(self, ctx: HookContext) -> HookResult:
        if self._scan is None:  # not prepared (called outside a run): scan now, in the transaction
            self._candidates = temp_file()
            copy_out(ctx.conn, candidates_sql(ctx.scope, self.countries, connection_unique(ctx.conn)),
                     self._candidates)
        else:
            # The scan's own statement_timeout and the watchdog bound it; the join bound is a backstop.
            if not self._scan.join(SCAN_JOIN_BOUND_S + ctx.network_timeout_s):
                raise DatabaseError("the inbound scan did not finish in time")
            self._candidates = self._scan.result()
        with temp_space():
            self._candidates.seek(0)
        return ensure(ctx, self.countries, self.domain, self._candidates)
