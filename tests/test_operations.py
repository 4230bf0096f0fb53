"""Operations in real processes: scheduler, signals, lock, guard, retries, timeouts, grants,
metrics. Every process here is the real CLI; the database is real; the Pushgateway is a real HTTP
server that records what it receives."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from reconcile.db.lock import lock_key
from reconcile.db.urls import DatabaseUrl
from reconcile.shard import Shard
from tests.pgtools import REPO, run_cli, url_text

SLOW_INSERT = """
CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep({seconds}); RETURN NEW; END $$;
CREATE TRIGGER slow BEFORE INSERT ON "Tenant" FOR EACH ROW EXECUTE FUNCTION slow();"""


class Proc:
    """A CLI process whose stdout events are read as they arrive."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "jobs", *args], env=env, cwd=REPO, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.events: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.events.append(json.loads(line))

    def wait_for(self, event: str, count: int = 1, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events if e.get("event") == event]
            if len(found) >= count:
                return found
            assert self.proc.poll() is None or time.monotonic() < deadline, (self.events, self.stderr())
            assert time.monotonic() < deadline, f"no {event} within {timeout}s: {self.events}"
            time.sleep(0.05)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def finish(self, timeout: float = 30) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def stderr(self) -> str:
        return self.proc.stderr.read() if self.proc.stderr and self.proc.poll() is not None else ""

    def of(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == event]


# -- scheduler ----------------------------------------------------------------------------------

def test_scheduler_fires_repeatedly_in_a_real_process_and_stops_on_sigterm(dbs):
    dbs.add_product(("a", "A", "pro", "active"))
    proc = Proc(["schedule", "--interval-seconds", "0.5"], dbs.env())
    reports = proc.wait_for("reconcile.report", count=2)
    assert reports[0]["created"] == ["a"] and reports[1]["counts"]["unchanged"] == 1
    assert reports[0]["run_id"] != reports[1]["run_id"]
    proc.signal(signal.SIGTERM)
    assert proc.finish() == 0
    assert proc.of("schedule.stopped")[0]["reason"] == "SIGTERM"


def test_run_now_then_the_cron_and_sigint(dbs):
    proc = Proc(["schedule", "--run-now", "--cron", "0 3 * * 0", "--timezone", "Europe/Paris"], dbs.env())
    started = proc.wait_for("schedule.started")[0]
    assert started["next_run"].startswith("20") and "+01:00" in started["next_run"]  # a Sunday, 03:00 Paris
    proc.wait_for("reconcile.report")
    proc.signal(signal.SIGINT)
    assert proc.finish() == 0


@pytest.mark.parametrize(("args", "fragment"), [
    (["--cron", "61 * * * *"], "cron '61 * * * *' is invalid"),
    (["--cron", "0 2 * *"], "must have 5 fields"),
    (["--cron", "0 2 * * 8"], "day of week 8"),
    (["--timezone", "Mars/Olympus"], "not a known IANA time zone"),
])
def test_invalid_cron_or_timezone_exit_2_at_startup(dbs, args, fragment):
    result = run_cli("schedule", *args, env=dbs.env())
    assert result.code == 2 and fragment in result.stderr and result.stdout == ""


def test_sigterm_lets_a_short_run_finish_within_the_grace_period(dbs):
    dbs.add_product(("a", "A", "pro", "active"))
    dbs.sql("marketplace", SLOW_INSERT.format(seconds=1.5))
    proc = Proc(["schedule", "--run-now", "--stop-grace", "20"], dbs.env())
    proc.wait_for("lock.acquired")
    proc.signal(signal.SIGTERM)
    assert proc.finish() == 0
    assert proc.of("reconcile.report")[0]["status"] == "success"
    assert "a" in dbs.market()


def test_sigterm_rolls_back_a_run_that_outlives_the_grace_period(dbs):
    dbs.add_product(("a", "A", "pro", "active"), ("b", "B", "pro", "active"))
    dbs.sql("marketplace", SLOW_INSERT.format(seconds=30))
    proc = Proc(["schedule", "--run-now", "--stop-grace", "0.5"], dbs.env())
    proc.wait_for("lock.acquired")
    time.sleep(0.5)
    started = time.monotonic()
    proc.signal(signal.SIGTERM)
    assert proc.finish() == 0
    assert time.monotonic() - started < 10
    report = proc.of("reconcile.report")[0]
    assert report["status"] == "failed" and "rolled back" in report["error"]
    assert dbs.market() == {}


def test_plain_run_on_sigterm_rolls_back_and_still_reports(dbs):
    dbs.add_product(("a", "A", "pro", "active"))
    dbs.sql("marketplace", SLOW_INSERT.format(seconds=30))
    proc = Proc(["run"], dbs.env())
    proc.wait_for("lock.acquired")
    time.sleep(0.5)
    proc.signal(signal.SIGTERM)
    assert proc.finish(timeout=15) == 7
    report = proc.of("reconcile.report")[0]
    assert report["status"] == "failed" and "SIGTERM" in report["error"]
    assert dbs.market() == {}
    assert "Traceback" not in proc.stderr()


# -- single runner --------------------------------------------------------------------------------

def test_a_second_run_exits_6_at_once_and_writes_nothing(dbs):
    dbs.add_product(("a", "A", "pro", "active"))
    with dbs.engine("marketplace").connect() as holder:
        holder.exec_driver_sql("SELECT pg_advisory_lock(%s)", (lock_key(Shard()),))
        started = time.monotonic()
        result = run_cli("run", env=dbs.env())
        assert result.code == 6 and time.monotonic() - started < 10
        assert result.report["status"] == "locked" and "lock" in result.report["error"]
        assert dbs.market() == {}
        assert run_cli("plan", env=dbs.env()).code == 0  # plan takes no lock
        shard = run_cli("run", "--shard", "0/2", env=dbs.env())  # a shard never runs beside a whole run
        assert shard.code == 6 and "whole run" in shard.report["error"]
        assert dbs.market() == {}


def test_shards_run_side_by_side_but_never_beside_a_whole_run(dbs):
    dbs.add_product(*[(f"t{i}", "T", "pro", "active") for i in range(8)])
    with dbs.engine("marketplace").connect() as holder:
        holder.exec_driver_sql("SELECT pg_advisory_lock_shared(%s)", (lock_key(Shard()),))  # a shard's hold
        holder.exec_driver_sql("SELECT pg_advisory_lock(%s)", (lock_key(Shard(0, 2)),))     # of shard 0/2
        assert run_cli("run", env=dbs.env()).code == 6
        assert run_cli("run", "--shard", "0/2", env=dbs.env()).code == 6
        other = run_cli("run", "--shard", "1/2", env=dbs.env())
        assert other.code == 0 and other.report["counts"]["created"] > 0


def test_two_real_processes_one_runs_the_other_exits_6(dbs):
    dbs.add_product(("a", "A", "pro", "active"))
    # Long enough that the second process (start-up, then a held lock retried for a second) finds
    # the first still holding it, even on a loaded machine.
    dbs.sql("marketplace", SLOW_INSERT.format(seconds=6))
    first = Proc(["run"], dbs.env())
    first.wait_for("lock.acquired")
    second = run_cli("run", env=dbs.env())
    assert second.code == 6 and second.report["status"] == "locked"
    assert first.finish() == 0
    assert first.of("reconcile.report")[0]["created"] == ["a"]


def test_wait_lock_waits_for_the_holder_then_runs(dbs):
    dbs.add_product(("a", "A", "pro", "active"))
    engine = dbs.engine("marketplace")
    holder = engine.connect()
    holder.exec_driver_sql("SELECT pg_advisory_lock(%s)", (lock_key(Shard()),))
    threading.Timer(1.5, holder.close).start()  # the holder's session ends: its lock goes with it
    started = time.monotonic()
    result = run_cli("run", "--wait-lock", "20", env=dbs.env())
    assert result.code == 0 and result.report["created"] == ["a"]
    assert 1.0 < time.monotonic() - started < 20


def test_sigterm_stops_a_run_waiting_for_the_lock_without_taking_it(dbs):
    dbs.add_product(("a", "A", "pro", "active"))
    with dbs.engine("marketplace").connect() as holder:
        holder.exec_driver_sql("SELECT pg_advisory_lock(%s)", (lock_key(Shard()),))
        proc = Proc(["run", "--wait-lock", "60"], dbs.env())
        proc.wait_for("reconcile.start")
        time.sleep(0.5)
        started = time.monotonic()
        proc.signal(signal.SIGTERM)
        assert proc.finish(timeout=15) == 7
        assert time.monotonic() - started < 5  # not the 60 s of --wait-lock
        holder.exec_driver_sql("SELECT pg_advisory_unlock(%s)", (lock_key(Shard()),))
    report = proc.of("reconcile.report")[0]
    assert report["status"] == "failed" and "SIGTERM" in report["error"]
    assert not proc.of("lock.acquired") and dbs.market() == {}


def test_the_lock_is_released_when_the_holding_process_is_killed(dbs):
    dbs.add_product(("a", "A", "pro", "active"))
    dbs.sql("marketplace", SLOW_INSERT.format(seconds=2))
    first = Proc(["run"], dbs.env())
    first.wait_for("lock.acquired")
    first.signal(signal.SIGKILL)
    first.finish()
    result = run_cli("run", "--wait-lock", "30", env=dbs.env())
    assert result.code == 0 and result.report["created"] == ["a"]


# -- safety guard ---------------------------------------------------------------------------------

def test_guard_trips_on_max_archive_and_force_passes(dbs):
    dbs.add_product(*[(f"t{i}", "T", "pro", "archived") for i in range(3)])
    dbs.add_market(*[(f"t{i}", "T", "PRO", "ACTIVE") for i in range(3)])
    result = run_cli("run", "--max-archive", "2", env=dbs.env())
    assert result.code == 5
    report = result.report
    assert report["status"] == "aborted" and report["guard"]["archives"] == 3 and report["guard"]["max_archive"] == 2
    assert report["planned"]["archive"] == 3 and "max_archive=2" in report["error"]
    # counts stay exact: what the run would have done, although it wrote nothing
    assert report["counts"]["archived"] == 3 and sorted(report["archived"]) == ["t0", "t1", "t2"]
    assert report["total"] == 3 and not result.of("tenant.archived")
    assert {r["status"] for r in dbs.market().values()} == {"ACTIVE"}
    assert run_cli("plan", "--max-archive", "2", env=dbs.env()).code == 5  # plan shows it too
    forced = run_cli("run", "--max-archive", "2", "--force", env=dbs.env())
    assert forced.code == 0 and forced.report["counts"]["archived"] == 3 and forced.of("guard.overridden")
    assert {r["status"] for r in dbs.market().values()} == {"CLOSED"}


def test_guard_ratio_rule_needs_ten_archives_and_more_than_the_ratio(dbs):
    dbs.add_market(*[(f"m{i:02d}", "M", "PRO", "ACTIVE") for i in range(60)])
    dbs.add_product(*[(f"m{i:02d}", "M", "pro", "archived" if i < 10 else "active") for i in range(60)])
    result = run_cli("run", env=dbs.env())  # 10 of 60 = 16.7 % > 10 %
    assert result.code == 5 and "max_archive_ratio" in result.report["error"]
    assert run_cli("run", env=dbs.env(RECONCILE_MAX_ARCHIVE_RATIO="0.2")).code == 0


def test_guard_ratio_rule_ignores_fewer_than_ten(dbs):
    dbs.add_market(*[(f"m{i}", "M", "PRO", "ACTIVE") for i in range(12)])
    dbs.add_product(*[(f"m{i}", "M", "pro", "archived" if i < 9 else "active") for i in range(12)])
    assert run_cli("run", env=dbs.env()).code == 0  # 9 of 12 is 75 %, but fewer than 10


def test_guard_trips_on_an_empty_product_snapshot(dbs):
    dbs.add_market(("a", "A", "PRO", "ACTIVE"))
    result = run_cli("run", "--orphans", "archive", env=dbs.env())
    assert result.code == 5 and "empty" in result.report["error"]
    assert result.report["counts"]["orphans"] == 1 and result.report["orphans"] == ["a"]
    assert dbs.market()["a"]["status"] == "ACTIVE"


# -- resilience -----------------------------------------------------------------------------------

def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_database_retries_then_exits_7_within_the_bound(dbs):
    env = dbs.env(RECONCILE_CONNECT_RETRY="2",
                  MARKETPLACE_DATABASE_URL=f"postgresql://u:hunter2@127.0.0.1:{closed_port()}/m")
    started = time.monotonic()
    result = run_cli("run", env=env)
    elapsed = time.monotonic() - started
    assert result.code == 7 and result.report["status"] == "failed"
    assert 2.0 <= elapsed < 2.0 + 5.0  # the bound, plus process start-up
    retries = result.of("db.retry")
    assert len(retries) >= 2 and all(r["database"] == "marketplace" for r in retries)
    assert "hunter2" not in result.stdout + result.stderr and "Traceback" not in result.stderr


def test_statement_timeout_setting_rolls_back_and_exits_7(dbs):
    dbs.add_product(("a", "A", "pro", "active"), ("b", "B", "pro", "active"))
    dbs.sql("marketplace", SLOW_INSERT.format(seconds=2))
    result = run_cli("run", env=dbs.env(RECONCILE_STATEMENT_TIMEOUT_MS="300"))
    assert result.code == 7 and "statement timeout" in result.report["error"]
    assert dbs.market() == {}


# -- least privilege ------------------------------------------------------------------------------

@contextmanager
def roles(dbs) -> Iterator[tuple[str, str]]:
    tag = uuid.uuid4().hex[:8]
    reader, writer = f"rc_reader_{tag}", f"rc_writer_{tag}"
    pdb, mdb = dbs.product.url.database, dbs.marketplace.url.database
    grants = {
        "product": f"""CREATE ROLE {reader} LOGIN; GRANT CONNECT ON DATABASE "{pdb}" TO {reader};
                       GRANT USAGE ON SCHEMA public TO {reader}; GRANT SELECT ON tenants TO {reader};""",
        "marketplace": f"""CREATE ROLE {writer} LOGIN; GRANT CONNECT ON DATABASE "{mdb}" TO {writer};
                           GRANT USAGE ON SCHEMA public TO {writer};
                           GRANT SELECT, INSERT, UPDATE ON "Tenant", inbound_connections, inbound_addresses TO {writer};
                           GRANT SELECT ON "MarketplaceConnection" TO {writer};""",
    }
    try:
        dbs.sql("product", grants["product"])
        dbs.sql("marketplace", grants["marketplace"])
        yield reader, writer
    finally:
        for which, role in (("product", reader), ("marketplace", writer)):
            dbs.sql(which, f"DROP OWNED BY {role}; DROP ROLE IF EXISTS {role}")


def test_the_job_runs_with_exactly_the_documented_grants(dbs):
    dbs.add_product(("a", "A", "pro", "active"), ("b", "B2", "dev", "archived"), ("c", "C", "pro", "active"))
    dbs.add_market(("b", "B", "DEV", "ACTIVE"), ("c", "Old", "PRO", "ACTIVE"), ("z", "Z", "PRO", "ACTIVE"))
    with roles(dbs) as (reader, writer):
        env = dbs.env(PRODUCT_DATABASE_URL=url_text(DatabaseUrl(dbs.product.url.set(username=reader))),
                      MARKETPLACE_DATABASE_URL=url_text(DatabaseUrl(dbs.marketplace.url.set(username=writer))))
        result = run_cli("run", "--orphans", "archive", "--ensure-inbound", "FR,DE", env=env)
        assert result.code == 0, result.stdout + result.stderr
        counts = result.report["counts"]
        assert (counts["created"], counts["updated"], counts["archived"], counts["inbound_created"]) == (1, 1, 2, 4)
        assert run_cli("status", "a", env=env).code == 0
        assert run_cli("sync", "c", "--country", "IT", env=env).code == 0
        no_delete = dbs.sql("marketplace", f"""SELECT bool_or(has_table_privilege('{writer}', t, 'DELETE')) AS d
            FROM unnest(ARRAY['"Tenant"', 'inbound_connections', 'inbound_addresses']) t""")[0].d
        assert no_delete is False


# -- metrics --------------------------------------------------------------------------------------

class _Gateway(BaseHTTPRequestHandler):
    received: list[tuple[str, str, str]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        self.server.received.append((self.command, self.path, body))  # type: ignore[attr-defined]
        self.send_response(200)
        self.end_headers()

    do_PUT = do_POST

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def pushgateway() -> Iterator[tuple[str, list[tuple[str, str, str]]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
    server.received = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.received  # type: ignore[attr-defined]
    finally:
        server.shutdown()


def test_run_pushes_duration_counts_status_and_last_success(dbs):
    dbs.add_product(("a", "A", "pro", "active"))
    with pushgateway() as (url, received):
        result = run_cli("run", "--pushgateway", url, env=dbs.env())
        assert result.code == 0 and result.of("metrics.pushed")
        method, path, body = received[0]
        assert method == "POST" and path.startswith("/metrics/job/tenant_reconcile/shard")
        for name in ("tenant_reconcile_last_run_duration_seconds",
                     'tenant_reconcile_last_run_actions{action="created"} 1.0',
                     'tenant_reconcile_last_run_status{status="success"} 1.0',
                     "tenant_reconcile_last_success_timestamp_seconds"):
            assert name in body, name
        down = f"postgresql://u@127.0.0.1:{closed_port()}/m"
        assert run_cli("run", env=dbs.env(RECONCILE_PUSHGATEWAY_URL=url, MARKETPLACE_DATABASE_URL=down)).code == 7
        failed = received[-1][2]
        assert 'tenant_reconcile_last_run_status{status="failed"} 1.0' in failed
        assert "tenant_reconcile_last_success_timestamp_seconds" not in failed  # kept from the last success


def test_a_push_failure_never_fails_the_run(dbs):
    dbs.add_product(("a", "A", "pro", "active"))
    result = run_cli("run", "--pushgateway", f"http://127.0.0.1:{closed_port()}", env=dbs.env())
    assert result.code == 0 and result.of("metrics.push_failed")[0]["level"] == "warning"


def test_scheduled_runs_push_metrics_too(dbs):
    with pushgateway() as (url, received):
        proc = Proc(["schedule", "--run-now", "--pushgateway", url], dbs.env())
        proc.wait_for("metrics.pushed")
        proc.signal(signal.SIGTERM)
        assert proc.finish() == 0
        assert received and "tenant_reconcile_last_run_status" in received[0][2]



def test_guard_applies_to_each_shard_run_on_its_own_plan(dbs):
    import hashlib

    ids = [f"t{i:02d}" for i in range(40)]
    dbs.add_market(*[(i, "T", "PRO", "ACTIVE") for i in ids])
    dbs.add_product(*[(i, "T", "pro", "archived" if n < 6 else "active") for n, i in enumerate(ids)])
    per_shard = [sum(int(hashlib.md5(i.encode()).hexdigest()[:8], 16) % 2 == k for i in ids[:6]) for k in range(2)]
    biggest = max(per_shard)
    assert biggest < 6  # the six archives are split between the shards
    env = dbs.env(RECONCILE_MAX_ARCHIVE_RATIO="1")
    reports = [run_cli("plan", "--shard", f"{k}/2", "--max-archive", str(biggest), env=env).report for k in range(2)]
    assert [r["status"] for r in reports] == ["success", "success"]  # 6 in all > max_archive, but per run
    assert [r["counts"]["archived"] for r in reports] == per_shard
    tripped = run_cli("plan", "--shard", f"{per_shard.index(biggest)}/2", "--max-archive", str(biggest - 1), env=env)
    assert tripped.code == 5 and tripped.report["guard"]["max_archive"] == biggest - 1
