"""What every fault test needs: URLs through the proxies (carrying a distinctive password), the CLI as
a real process with a hard deadline, seeding in bulk, the marketplace's full contents, an own
server that can be restarted, and the checks every test makes (exit code, one report, its error,
no traceback, no secret)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from reconcile.db.urls import DatabaseUrl
from tests.faults.proxy import FaultProxy, Upstream
from tests.pgtools import REPO, Databases

# Distinctive, with characters a URL must percent-encode; no 4 characters of it (raw or encoded)
# occur in ordinary output (hex run ids, timestamps, host:port/db). The test servers use trust
# authentication, so any password connects.
PASSWORD = "Qz#Wx@Kj!Vp&Ym%Rt"
ENCODED_PASSWORD = quote(PASSWORD, safe="")

# The statements that mark each phase of a run on the wire (simple-protocol query text).
LOCK = b"pg_try_advisory_lock"
SNAPSHOT = b"COPY (SELECT"
STAGE_CREATES = b"COPY rc_create FROM STDIN"
STAGE_UPDATES = b"COPY rc_update FROM STDIN"
INSERT = b'INSERT INTO "Tenant"'
UPDATE = b'UPDATE "Tenant"'
COMMIT = b"COMMIT"


@dataclass(frozen=True)
class Phase:
    """Where in a `run` a fault strikes: which proxy, the markers that lead there, and how many bytes
    in which direction after them."""

    proxy: str  # "product" | "marketplace"
    markers: tuple[bytes, ...]
    direction: str
    after: int


# Sizes: with seed_bulk(new=1500, drifted=300, same=1200) the product COPY sends ~100 kB, the
# marketplace COPY ~50 kB and the staging COPY of the creates ~60 kB, so 8000 bytes in is mid-COPY.
PHASES = {
    "connect": Phase("marketplace", (), "c2s", 8),  # mid startup packet
    "lock": Phase("marketplace", (LOCK,), "s2c", 0),  # the server took the lock; the answer is lost
    "product snapshot": Phase("product", (SNAPSHOT,), "s2c", 8000),
    "marketplace snapshot": Phase("marketplace", (SNAPSHOT,), "s2c", 8000),
    "staging": Phase("marketplace", (STAGE_CREATES,), "c2s", 8000),
    "insert": Phase("marketplace", (INSERT,), "s2c", 0),  # the INSERT ran; its answer is lost
    "update": Phase("marketplace", (UPDATE,), "s2c", 0),
    "commit": Phase("marketplace", (INSERT, COMMIT), "c2s", 0),  # COMMIT never reaches the server
}
BULK = {"new": 1500, "drifted": 300, "same": 1200}


# A slow trigger whose delay is read from a table, so a test can make it fast again while a killed
# run's backend is still sleeping in it (DROP TRIGGER would wait for that backend's locks).
SLOW_WRITES = """
CREATE TABLE IF NOT EXISTS rc_fault_delay (seconds float8 NOT NULL);
INSERT INTO rc_fault_delay VALUES ({seconds});
CREATE FUNCTION rc_fault_slow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep((SELECT seconds FROM rc_fault_delay LIMIT 1)); RETURN NEW; END $$;
CREATE TRIGGER rc_fault_slow BEFORE {events} ON "Tenant" FOR EACH ROW EXECUTE FUNCTION rc_fault_slow();
"""


def slow_writes(dbs: Databases, seconds: float, events: str = "INSERT") -> None:
    dbs.sql("marketplace", SLOW_WRITES.format(seconds=float(seconds), events=events))


def set_delay(dbs: Databases, seconds: float) -> None:
    dbs.sql("marketplace", "UPDATE rc_fault_delay SET seconds = :s", {"s": float(seconds)})


# -- URLs ------------------------------------------------------------------------------------------

def upstream_of(db: DatabaseUrl) -> Upstream:
    """Where a test database really is: TCP host:port, or an embedded server's Unix socket."""
    url = db.url
    port = url.port or 5432
    if url.host:
        return Upstream(host=url.host, port=port)
    socket_dir = url.query.get("host")
    if isinstance(socket_dir, tuple):
        socket_dir = socket_dir[0]
    assert socket_dir, f"no host in {db}"
    if not str(socket_dir).startswith("/"):
        return Upstream(host=str(socket_dir), port=port)
    return Upstream(unix_path=f"{socket_dir}/.s.PGSQL.{port}")


def proxied_url(db: DatabaseUrl, proxy: FaultProxy) -> str:
    """`db` reached through `proxy`, with the distinctive password; no TLS, so markers are visible."""
    user = quote(db.url.username or "postgres", safe="")
    return (f"postgresql://{user}:{ENCODED_PASSWORD}@127.0.0.1:{proxy.port}/{quote(str(db.url.database), safe='')}"
            "?sslmode=disable")


def direct_url(db: DatabaseUrl) -> str:
    """`db` as it is (TCP or Unix socket), with the distinctive password."""
    url = db.url.set(drivername="postgresql", password=PASSWORD)
    return url.render_as_string(hide_password=False)


def display_of_proxied(db: DatabaseUrl, proxy: FaultProxy) -> str:
    return f"127.0.0.1:{proxy.port}/{db.url.database}"


def base_env(dbs: Databases, product_url: str, market_url: str, **extra: str) -> dict[str, str]:
    env = dbs.env(PRODUCT_DATABASE_URL=product_url, MARKETPLACE_DATABASE_URL=market_url,
                  RECONCILE_CONNECT_RETRY="0", RECONCILE_NETWORK_TIMEOUT="3", RECONCILE_CONNECT_TIMEOUT="3")
    env.pop("DATABASE_URL", None)
    env.pop("RECONCILE_DEBUG", None)
    env.update(extra)
    return env


@dataclass
class Faults:
    """A fresh product + marketplace pair, each behind its own proxy."""

    dbs: Databases
    product: FaultProxy
    market: FaultProxy

    @property
    def product_display(self) -> str:
        return display_of_proxied(self.dbs.product, self.product)

    @property
    def market_display(self) -> str:
        return display_of_proxied(self.dbs.marketplace, self.market)

    def names(self, which: str) -> tuple[str, ...]:
        """What an error naming that database may say: its host:port/db or the word."""
        if which == "product":
            return (self.product_display, "product")
        if which == "marketplace":
            return (self.market_display, "marketplace")
        return (self.product_display, "product", self.market_display, "marketplace")

    def env(self, **extra: str) -> dict[str, str]:
        return base_env(self.dbs, proxied_url(self.dbs.product, self.product),
                        proxied_url(self.dbs.marketplace, self.market), **extra)

    def direct_env(self, **extra: str) -> dict[str, str]:
        return base_env(self.dbs, direct_url(self.dbs.product), direct_url(self.dbs.marketplace), **extra)

    def proxy(self, which: str) -> FaultProxy:
        return self.product if which == "product" else self.market

    def close(self) -> None:
        self.product.close()
        self.market.close()


@contextmanager
def faults_for(dbs: Databases) -> Iterator[Faults]:
    product = FaultProxy(upstream_of(dbs.product), "product")
    market = FaultProxy(upstream_of(dbs.marketplace), "marketplace")
    faults = Faults(dbs, product, market)
    try:
        yield faults
    finally:
        faults.close()


# -- the CLI as a process ------------------------------------------------------------------------------

@dataclass
class Outcome:
    """How a CLI process ended. `code` None: it was still running at its deadline and was killed."""

    args: tuple[str, ...]
    code: int | None
    stdout: str
    stderr: str
    elapsed: float
    report_file: str | None = None

    @property
    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.stdout.splitlines():
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    raise AssertionError(f"stdout line is not JSON: {line[:300]!r}") from None
        return out

    @property
    def reports(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == "reconcile.report"]

    @property
    def report(self) -> dict[str, Any]:
        reports = self.reports
        assert len(reports) == 1, f"expected exactly one reconcile.report on stdout, got {len(reports)}{self.tail()}"
        return reports[0]

    @property
    def last_json(self) -> dict[str, Any]:
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        assert lines, f"nothing on stdout{self.tail()}"
        return json.loads(lines[-1])

    def error(self) -> str:
        reports = self.reports
        return str(reports[-1].get("error")) if reports else "(no report)"

    def tail(self) -> str:
        """A short picture of the process for assertion messages."""
        stderr = self.stderr.strip().splitlines()
        return (f"\n  `{' '.join(self.args)}` exit {self.code} after {self.elapsed:.1f}s"
                f"\n  report error: {self.error()}"
                f"\n  stderr (last lines): {stderr[-3:]}"
                f"\n  stdout (last 600 chars): {self.stdout[-600:]}")


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "jobs", *args]


def run(*args: str, env: dict[str, str], deadline: float, report_file: str | None = None) -> Outcome:
    """Run the CLI; kill it if it is still running after `deadline` seconds (code None)."""
    started = time.monotonic()
    proc = subprocess.Popen(cli_argv(*args), env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=deadline)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        code = None
    return Outcome(tuple(args), code, stdout, stderr, time.monotonic() - started, report_file)


class Proc:
    """A CLI process in the background whose stdout events are read as they arrive."""

    def __init__(self, *args: str, env: dict[str, str]) -> None:
        self.args = args
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cli_argv(*args), env=env, cwd=REPO, text=True, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self.lines: list[str] = []
        self._stderr: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, self._stderr), daemon=True)]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in list(self.lines):
            if line.startswith("{"):
                with suppress(ValueError):  # a line still being written
                    out.append(json.loads(line))
        return out

    def wait_for(self, event: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events() if e.get("event") == event]
            if found:
                return found[0]
            if self.proc.poll() is not None:
                time.sleep(0.1)  # let the readers catch up
                found = [e for e in self.events() if e.get("event") == event]
                if found:
                    return found[0]
                raise AssertionError(f"the process ended (exit {self.proc.returncode}) before {event}:"
                                     f" {''.join(self.lines)[-800:]} {''.join(self._stderr)[-800:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {event} within {timeout}s: {''.join(self.lines)[-800:]}")
            time.sleep(0.02)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def finish(self, deadline: float) -> Outcome:
        """Wait up to `deadline` seconds from now; kill it if still running (code None)."""
        begun = time.monotonic()
        try:
            code: int | None = self.proc.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            code = None
        for reader in self._readers:
            reader.join(timeout=5)
        return Outcome(self.args, code, "".join(self.lines), "".join(self._stderr), time.monotonic() - begun)

    def kill_if_running(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


# -- checks ---------------------------------------------------------------------------------------------

def secret_fragments() -> set[str]:
    """Every substring of four characters or more of the password, raw and percent-encoded."""
    out: set[str] = set()
    for secret in (PASSWORD, ENCODED_PASSWORD):
        for i in range(len(secret)):
            for j in range(i + 4, len(secret) + 1):
                out.add(secret[i:j])
    return out


_FRAGMENTS = secret_fragments()


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        leaked = sorted((f for f in _FRAGMENTS if f in text), key=len, reverse=True)
        assert not leaked, f"a piece of the database password is in the output: {leaked[0]!r} in ...{text[-400:]}"


def outputs(out: Outcome) -> list[str]:
    texts = [out.stdout, out.stderr]
    if out.report_file and os.path.exists(out.report_file):
        texts.append(Path(out.report_file).read_text(encoding="utf-8", errors="replace"))
    return texts


def record_timing(out: Outcome) -> None:
    """With RECONCILE_FAULT_TIMINGS=FILE, one JSON line per checked run (test, exit code, seconds
    to exit): the figures the README's failure table quotes."""
    path = os.environ.get("RECONCILE_FAULT_TIMINGS")
    if path:
        line = {"test": os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0], "args": list(out.args),
                "code": out.code, "seconds": round(out.elapsed, 2)}
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")


def assert_ended(out: Outcome, bound: float) -> None:
    record_timing(out)
    assert out.code is not None, f"the run did not end by itself within {bound:.0f}s (killed){out.tail()}"
    assert out.elapsed < bound, f"the run took {out.elapsed:.1f}s, more than {bound:.0f}s{out.tail()}"


def assert_failed_run(out: Outcome, *, bound: float, names: tuple[str, ...], code: int = 7) -> dict[str, Any]:
    """Ended by itself within `bound`, exit `code`, exactly one report with status failed and a
    one-line error naming one of `names`; no traceback, no internal error, no secret."""
    assert_ended(out, bound)
    assert out.code == code, f"exit {out.code}, expected {code}{out.tail()}"
    report = out.report
    assert report["status"] == "failed", f"report status {report['status']!r}, expected 'failed'{out.tail()}"
    error = report.get("error")
    assert isinstance(error, str) and error.strip(), f"the report has no error{out.tail()}"
    assert "\n" not in error.strip(), f"the report's error is not one line: {error!r}"
    assert "internal error" not in error, f"an internal error, not a named failure: {error!r}"
    assert any(name in error for name in names), f"the error names none of {names}: {error!r}"
    assert "Traceback" not in out.stderr, f"a traceback on stderr: {out.stderr[-1500:]}"
    assert_no_secret(*outputs(out))
    return report


def assert_success(out: Outcome, *, bound: float = 60, code: int = 0) -> dict[str, Any]:
    assert_ended(out, bound)
    assert out.code == code, f"exit {out.code}, expected {code}{out.tail()}"
    report = out.report
    assert "Traceback" not in out.stderr, out.stderr[-1500:]
    assert_no_secret(*outputs(out))
    return report


def assert_fired(rule: Any, what: str) -> None:
    assert rule.fired.is_set(), (f"the proxy never reached {what}: the statement that marks this phase was not "
                                 "seen on the wire (is the phase marker out of date?)")


# -- database contents ---------------------------------------------------------------------------------

MARKET_TABLES = ('"Tenant"', "inbound_connections", "inbound_addresses")


def market_state(dbs: Databases) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the marketplace tables the tool writes, all columns, in id order."""
    out = {}
    with dbs.engine("marketplace").connect() as conn:
        for table in MARKET_TABLES:
            out[table] = [tuple(r) for r in conn.exec_driver_sql(f'SELECT * FROM {table} ORDER BY id COLLATE "C"')]
    return out


def tenant_rows(dbs: Databases) -> dict[str, tuple[Any, ...]]:
    """id -> (slug, name, plan, status) of every marketplace tenant."""
    rows = dbs.sql("marketplace", 'SELECT id, slug, name, plan::text, status::text FROM "Tenant"')
    return {r[0]: tuple(r[1:]) for r in rows}


def assert_nothing_written(dbs: Databases, before: dict[str, list[tuple[Any, ...]]]) -> None:
    after = market_state(dbs)
    for table in MARKET_TABLES:
        if after[table] != before[table]:
            added = len(after[table]) - len(before[table])
            pairs = zip(after[table], before[table], strict=False)
            first = next((a for a, b in pairs if a != b), after[table][-1:])
            raise AssertionError(f"the marketplace changed: {table} has {added:+d} rows, or changed rows "
                                 f"(first differing: {first})")


@dataclass
class Seeded:
    new: list[str] = field(default_factory=list)
    drifted: list[str] = field(default_factory=list)
    same: list[str] = field(default_factory=list)
    archived: list[str] = field(default_factory=list)

    @property
    def product_ids(self) -> list[str]:
        return self.new + self.drifted + self.same + self.archived


def seed_bulk(dbs: Databases, *, new: int = 0, drifted: int = 0, same: int = 0, archived: int = 0) -> Seeded:
    """Product tenants t00001.. in four groups: absent from the marketplace (create), there with
    another name (update), there and equal (unchanged), archived in product and ACTIVE there (archive)."""
    seeded = Seeded()
    groups = (("new", new), ("drifted", drifted), ("same", same), ("archived", archived))
    first = 1
    spans = {}
    for name, count in groups:
        spans[name] = (first, first + count - 1)
        getattr(seeded, name).extend(f"t{n:05d}" for n in range(first, first + count))
        first += count
    total = first - 1
    if total == 0:
        return seeded
    a0, a1 = spans["archived"]
    dbs.sql("product", """
        INSERT INTO tenants (id, name, plan, status)
        SELECT 't' || lpad(g::text, 5, '0'), 'Tenant number ' || g, 'pro',
               CASE WHEN g BETWEEN :a0 AND :a1 THEN 'archived' ELSE 'active' END
        FROM generate_series(1, :n) g""", {"n": total, "a0": a0, "a1": a1})
    d0, d1 = spans["drifted"]
    if total >= spans["drifted"][0]:
        dbs.sql("marketplace", """
            INSERT INTO "Tenant" (id, slug, name, plan, status, "createdAt", "updatedAt")
            SELECT 't' || lpad(g::text, 5, '0'), 't' || lpad(g::text, 5, '0'),
                   CASE WHEN g BETWEEN :d0 AND :d1 THEN 'Old name ' ELSE 'Tenant number ' END || g,
                   'PRO', 'ACTIVE', '2020-01-01', '2020-01-01'
            FROM generate_series(:first, :n) g""", {"first": spans["drifted"][0], "n": total, "d0": d0, "d1": d1})
    return seeded


def reset_pair(dbs: Databases) -> None:
    """Empty a reused pair: end every other session on it (a stalled or killed run's), then remove
    the rows and whatever fault trigger a test added."""
    for which in ("product", "marketplace"):
        deadline = time.monotonic() + 15
        while dbs.sql(which, "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE datname = current_database() AND pid <> pg_backend_pid()) t")[0][0]:
            assert time.monotonic() < deadline, f"sessions on the {which} database do not end"
            time.sleep(0.05)
    dbs.sql("product", "TRUNCATE tenants")
    dbs.sql("marketplace", 'DROP TRIGGER IF EXISTS rc_fault_slow ON "Tenant"; '
                           "DROP FUNCTION IF EXISTS rc_fault_slow(); "
                           "DROP TABLE IF EXISTS rc_fault_delay, rc_fault_before; "
                           'TRUNCATE "Tenant", inbound_connections, inbound_addresses, "MarketplaceConnection"')


def backends_of(dbs: Databases) -> int:
    """Sessions of the tool (application_name tenant-reconcile) still open on the marketplace DB."""
    rows = dbs.sql("marketplace", "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                  "AND application_name LIKE 'tenant-reconcile%' AND pid <> pg_backend_pid()")
    return int(rows[0][0])


def wait_for_no_backends(dbs: Databases, timeout: float) -> float:
    started = time.monotonic()
    while backends_of(dbs):
        if time.monotonic() - started > timeout:
            raise AssertionError(f"the killed run's session is still open after {timeout}s")
        time.sleep(0.05)
    return time.monotonic() - started


# -- an own server, that a test may restart --------------------------------------------------------------

class OwnServer:
    """An embedded PostgreSQL started for one test module; never the shared server."""

    def __init__(self, handle: Any) -> None:
        from tests.pgtools import Server

        self.handle = handle
        self.server = Server(DatabaseUrl.parse(handle.url("postgres"), "embedded"), embedded=True)

    def pair(self) -> Databases:
        import uuid

        from reconcile.testing.schema import init_marketplace, init_product

        tag = uuid.uuid4().hex[:10]
        product, market = f"rc_{tag}_p", f"rc_{tag}_m"
        self.server.create_database(product)
        self.server.create_database(market)
        dbs = Databases(self.server.url_for(product), self.server.url_for(market))
        init_product(dbs.product)
        init_marketplace(dbs.marketplace)
        return dbs

    def drop(self, dbs: Databases) -> None:
        dbs.dispose()
        for db in (dbs.product, dbs.marketplace):
            self.server.drop_database(str(db.url.database))

    def pg_ctl(self, *args: str, timeout: float = 60) -> None:
        from reconcile.testing.embedded import _as_user, _postgres_bin

        argv = _as_user([_postgres_bin("pg_ctl"), "-D", self.handle.data_dir, *args], self.handle.system_user)
        # stdout/stderr to a file: the restarted postmaster inherits them and would keep a pipe open.
        log = os.path.join(self.handle.workdir, "pg_ctl.log")
        with open(log, "ab") as fh:
            result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=fh, timeout=timeout,
                                    check=False)
        assert result.returncode == 0, f"pg_ctl {' '.join(args)} failed: {Path(log).read_text()[-800:]}"

    def restart(self, mode: str) -> None:
        """`pg_ctl restart -m immediate|fast`, as the server's own system user; waits until it is up."""
        log = os.path.join(self.handle.data_dir, "restart.log")
        self.pg_ctl("-m", mode, "-w", "-t", "60", "-l", log, "restart")

    def set_config(self, **settings: Any) -> None:
        """ALTER SYSTEM, then a fast restart so it applies (e.g. max_connections)."""
        engine = self.server._engine
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for name, value in settings.items():
                conn.exec_driver_sql(f"ALTER SYSTEM SET {name} = '{value}'")
        self.restart("fast")

    def dispose(self) -> None:
        self.server.dispose()
