"""`schedule --listen`: product changes reach the marketplace through real PostgreSQL NOTIFY, the
real Redis Pub/Sub and updated_at polling; events are hints (coalesced, re-read), nothing is lost
at start, two listeners never write twice, a bad payload is a warning, SIGTERM ends a batch cleanly.
Every process is the real CLI; every database and Redis is real."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa

from jobs.events.queue import EventQueue
from jobs.events.sources import tenant_id_of
from jobs.process import RunSlot
from reconcile.db.lock import lock_key, tenant_keys
from reconcile.shard import Shard
from tests.faults.harness import run
from tests.listening import (
    events_of,
    listen,
    market_row,
    redis_client,
    reports,
    stop,
    wait_until,
    with_trigger,
)

SOURCES = ["pg", "redis", "poll"]


def change(dbs, source, statement, params, tenant_id, redis=None, channel=None):
    """A product change as the product application makes it: `updated_at` bumped; with the redis
    source it also publishes the tenant id (the trigger does the pg source's announcing)."""
    dbs.sql("product", statement, params)
    if source == "redis":
        redis.publish(channel, f'{{"tenantId": "{tenant_id}"}}')


# -- payloads and the queue (pure) -------------------------------------------------------------------

@pytest.mark.parametrize(("payload", "expected"), [
    ("kbz-001", "kbz-001"), (b"kbz-001", "kbz-001"), (" kbz-001\n", "kbz-001"), ('"kbz-001"', "kbz-001"),
    ('{"tenantId": "kbz-001"}', "kbz-001"), ('{"tenantId": "kbz-001", "op": "update"}', "kbz-001"),
    ('{"tenantId": 5}', None), ('{"id": "kbz-001"}', None), ("[1, 2]", None), ("{not json", None),
    ("two words", None), ("", None), (b"\xff\xfe", None), ("x" * 129, None), ("a\x00b", None),
    ('{"tenantId": "a\\u0000b"}', None), ("3", "3"),
])
def test_a_payload_is_a_bare_id_or_an_object_with_tenantId_and_nothing_else(payload, expected):
    assert tenant_id_of(payload) == expected


def test_a_burst_for_one_tenant_is_one_entry_and_a_batch_holds_at_most_max_batch_ids():
    queue = EventQueue(window_s=0.05, max_batch=3)
    for _ in range(10_000):
        queue.publish("redis", ["kbz-001"])
    queue.publish("pg", ["kbz-002", "kbz-003", "kbz-004", "kbz-001"])
    first = queue.next_batch(lambda: False)
    assert first is not None and first.ids == ("kbz-001", "kbz-002", "kbz-003")
    assert first.source == "pg,redis" and first.source_of["kbz-001"] == "redis"
    second = queue.next_batch(lambda: False)
    assert second is not None and second.ids == ("kbz-004",) and len(queue) == 0


def test_a_requeued_batch_goes_first_and_keeps_when_its_events_arrived():
    queue = EventQueue(window_s=0.0)
    queue.publish("pg", ["a"])
    batch = queue.next_batch(lambda: False)
    queue.publish("redis", ["b"])
    queue.requeue(batch)
    again = queue.next_batch(lambda: False)
    assert again.ids == ("a", "b") and again.arrived["a"] == batch.arrived["a"] and again.source_of["a"] == "pg"


def test_next_batch_returns_none_when_stopping_with_nothing_pending():
    assert EventQueue().next_batch(lambda: True) is None


def test_full_runs_and_batches_take_turns_in_the_run_slot():
    slot = RunSlot(lambda: False, log=None)
    order: list[str] = []
    inside = threading.Event()

    def full_run(_cancel):
        order.append("full:start")
        inside.set()
        time.sleep(0.3)
        order.append("full:end")

    runner = threading.Thread(target=slot.run, args=(full_run,))
    runner.start()
    inside.wait(5)
    slot.run(lambda _cancel: order.append("batch"))
    runner.join(5)
    assert order == ["full:start", "full:end", "batch"]


# -- settings ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "env", "fragment"), [
    (("--listen", "pg,kafka"), {}, "--listen: unknown event source 'kafka' (expected pg, redis, poll)"),
    ((), {"RECONCILE_LISTEN": "nats"}, "RECONCILE_LISTEN: unknown event source 'nats'"),
    (("--listen", "redis"), {"REDIS_URL": ""}, "REDIS_URL is not set: the redis event source needs it"),
    (("--listen", "redis"), {"REDIS_URL": "http://:pw-Zq9@cache:6379"}, "REDIS_URL must be a redis:// or rediss://"),
    (("--listen", "poll", "--poll-interval", "0"), {}, "--poll-interval must be > 0"),
])
def test_a_bad_listen_setting_is_exit_2_in_one_line_naming_it(dbs, args, env, fragment):
    full_env = {k: v for k, v in dbs.env().items() if k != "REDIS_URL"}
    full_env.update({k: v for k, v in env.items() if v})
    out = run("schedule", *args, env=full_env, deadline=30)
    assert out.code == 2, out.tail()
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], lines
    assert "pw-Zq9" not in out.stderr + out.stdout


def test_an_unreachable_redis_is_retried_with_backoff_and_its_password_never_shown(dbs):
    proc = listen(dbs, "redis", started=False, REDIS_URL="redis://:Sec-Rx7!pw@127.0.0.1:1/0")
    try:
        wait_until("two disconnects", lambda: len(events_of(proc, "listen.disconnected")) >= 2, proc)
    finally:
        out = stop(proc)
    assert out.code == 0, out.tail()
    first = next(e for e in out.events if e["event"] == "listen.disconnected")
    assert first["source"] == "redis" and first["retry_in_s"] > 0
    assert "Sec-Rx7" not in out.stdout + out.stderr


# -- install-trigger -------------------------------------------------------------------------------------

def test_install_trigger_print_shows_the_sql_and_connects_nowhere():
    out = run("install-trigger", "--print", "--product-url", "postgresql://u:pw@192.0.2.1:1/nowhere",
              env={"PATH": "/usr/bin:/bin"}, deadline=20)
    assert out.code == 0, out.tail()
    assert "CREATE OR REPLACE FUNCTION tenant_reconcile_notify()" in out.stdout
    assert "AFTER INSERT OR UPDATE OR DELETE ON tenants" in out.stdout and "pg_notify('tenant_changed'" in out.stdout


def test_install_trigger_is_idempotent_and_announces_inserts_updates_deletes_and_both_ids_of_a_rename(dbs):
    for _ in range(2):
        out = run("install-trigger", env=dbs.env(), deadline=30)
        assert out.code == 0, out.tail()
    assert [e["event"] for e in out.events] == ["trigger.installed"]
    triggers = dbs.sql("product", "SELECT count(*) AS n FROM pg_trigger WHERE tgname = 'tenant_reconcile_notify'")
    assert triggers[0].n == 1
    listener = dbs.engine("product").raw_connection()
    try:
        conn = listener.dbapi_connection
        conn.autocommit = True
        conn.cursor().execute("LISTEN tenant_changed")
        dbs.add_product(("t-1", "One", "pro", "active"))
        dbs.sql("product", "UPDATE tenants SET name = 'Uno' WHERE id = 't-1'")
        dbs.sql("product", "UPDATE tenants SET id = 't-2' WHERE id = 't-1'")
        dbs.sql("product", "DELETE FROM tenants WHERE id = 't-2'")
        payloads: list[str] = []
        deadline = time.monotonic() + 10
        while len(payloads) < 5 and time.monotonic() < deadline:
            conn.poll()
            payloads += [n.payload for n in conn.notifies]
            conn.notifies.clear()
            time.sleep(0.02)
    finally:
        listener.close()
    assert payloads == ["t-1", "t-1", "t-1", "t-2", "t-2"]


def test_the_pg_source_warns_when_the_product_has_no_trigger(dbs):
    proc = listen(dbs, "pg")
    try:
        warning = wait_until("the warning", lambda: events_of(proc, "listen.no_trigger"), proc)[0]
    finally:
        out = stop(proc)
    assert out.code == 0 and "install-trigger" in warning["detail"]


# -- end to end, per source ------------------------------------------------------------------------------

@pytest.mark.parametrize("source", SOURCES)
def test_created_updated_archived_and_deleted_product_tenants_reach_the_marketplace(dbs, source):
    with_trigger(dbs)
    redis = redis_client() if source == "redis" else None
    proc = listen(dbs, source, "--orphans", "archive")
    channel = proc.channel  # type: ignore[attr-defined]
    try:
        change(dbs, source, "INSERT INTO tenants (id, name, plan, status) VALUES ('ev-1', 'Event', 'pro', 'active')",
               {}, "ev-1", redis, channel)
        wait_until("the created tenant", lambda: market_row(dbs, "ev-1"), proc)
        change(dbs, source, "UPDATE tenants SET plan = 'enterprise', updated_at = now() WHERE id = 'ev-1'", {},
               "ev-1", redis, channel)
        wait_until("the update", lambda: (market_row(dbs, "ev-1") or {}).get("plan") == "ENTERPRISE", proc)
        change(dbs, source, "UPDATE tenants SET status = 'archived', updated_at = now() WHERE id = 'ev-1'", {},
               "ev-1", redis, channel)
        wait_until("the archive", lambda: (market_row(dbs, "ev-1") or {}).get("status") == "CLOSED", proc)
        if source != "poll":  # a deleted row has no updated_at to poll: the nightly full run archives it
            change(dbs, source, "INSERT INTO tenants (id, name, plan, status) VALUES ('ev-2', 'Two', 'dev', 'trial')",
                   {}, "ev-2", redis, channel)
            wait_until("the second tenant", lambda: market_row(dbs, "ev-2"), proc)
            change(dbs, source, "DELETE FROM tenants WHERE id = 'ev-2'", {}, "ev-2", redis, channel)
            wait_until("the deleted tenant archived",
                       lambda: (market_row(dbs, "ev-2") or {}).get("status") == "CLOSED", proc)
    finally:
        out = stop(proc)
    assert out.code == 0, out.tail()
    batches = [r for r in out.reports if r["trigger"] == "event"]
    assert batches and all(r["source"]["event"] == source and r["status"] == "success" for r in batches)
    assert sum(r["counts"]["created"] for r in batches) == (1 if source == "poll" else 2)
    assert "Traceback" not in out.stderr


def test_changes_made_while_no_listener_ran_arrive_with_the_startup_run(dbs):
    with_trigger(dbs)
    dbs.add_product(*[(f"down-{i}", f"Down {i}", "pro", "active") for i in range(5)])
    proc = listen(dbs, "pg")
    try:
        startup = reports(proc, "startup")[0]
    finally:
        out = stop(proc)
    assert out.code == 0
    assert startup["counts"]["created"] == 5 and startup["status"] == "success"
    assert all(market_row(dbs, f"down-{i}") for i in range(5))


def test_a_burst_of_ten_thousand_events_for_one_tenant_is_one_write(dbs):
    redis = redis_client()
    dbs.add_market(("hot", "Old", "PRO", "ACTIVE"))
    dbs.add_product(("hot", "New", "pro", "active"))
    proc = listen(dbs, "redis", "--orphans", "report")
    channel = proc.channel  # type: ignore[attr-defined]
    try:
        # The startup run already made it right; change it again, then announce it 10,000 times.
        dbs.sql("product", "UPDATE tenants SET name = 'Newer' WHERE id = 'hot'")
        pipe = redis.pipeline(transaction=False)
        for _ in range(10_000):
            pipe.publish(channel, "hot")
        pipe.execute()
        wait_until("the update", lambda: (market_row(dbs, "hot") or {}).get("name") == "Newer", proc)
        time.sleep(1.0)  # any further batch of the burst would have run by now
    finally:
        out = stop(proc)
    updates = [e for e in out.events if e["event"] == "tenant.updated" and e["tenant_id"] == "hot"]
    assert len(updates) == 2  # the startup run's and the burst's: one write for 10,000 events
    batches = [r for r in out.reports if r["trigger"] == "event"]
    assert 1 <= len(batches) <= 5 and sum(r["counts"]["updated"] for r in batches) == 1


def test_a_transaction_changing_one_tenant_many_times_is_one_notification_and_one_write(dbs):
    with_trigger(dbs)
    dbs.add_product(("hot", "v0", "pro", "active"))
    proc = listen(dbs, "pg")
    try:
        dbs.sql("product", "DO $$ BEGIN FOR i IN 1..2000 LOOP UPDATE tenants SET name = 'v' || i "
                           "WHERE id = 'hot'; END LOOP; END $$")
        wait_until("the last value", lambda: (market_row(dbs, "hot") or {}).get("name") == "v2000", proc)
        time.sleep(1.0)
    finally:
        out = stop(proc)
    batches = [r for r in out.reports if r["trigger"] == "event"]
    assert len(batches) == 1 and batches[0]["counts"]["updated"] == 1


def test_malformed_payloads_are_warnings_and_the_listener_goes_on(dbs):
    redis = redis_client()
    with_trigger(dbs)
    proc = listen(dbs, "redis,pg")
    channel = proc.channel  # type: ignore[attr-defined]
    try:
        for bad in ('{"tenantId": 5}', "[1, 2]", "two words", b"\xff\xfe", "{", "x" * 5000, ""):
            redis.publish(channel, bad)
        dbs.sql("product", "SELECT pg_notify('tenant_changed', '')")
        dbs.sql("product", "SELECT pg_notify('tenant_changed', '{\"tenantId\": []}')")
        wait_until("nine warnings", lambda: len(events_of(proc, "listen.bad_payload")) >= 9, proc)
        dbs.add_product(("after", "After", "pro", "active"))
        redis.publish(channel, "after")
        wait_until("the valid event after them", lambda: market_row(dbs, "after"), proc)
    finally:
        out = stop(proc)
    assert out.code == 0 and "Traceback" not in out.stderr
    warnings = [e for e in out.events if e["event"] == "listen.bad_payload"]
    assert {w["source"] for w in warnings} == {"redis", "pg"} and all(w["level"] == "warning" for w in warnings)
    assert "x" * 100 not in out.stdout  # the payload itself is never echoed


def test_two_listeners_never_write_the_same_change_twice(dbs):
    with_trigger(dbs)
    first = listen(dbs, "pg")
    second = listen(dbs, "pg")
    ids = [f"pair-{i:02d}" for i in range(40)]
    try:
        for tenant_id in ids:  # one transaction each: many batches, on both listeners at once
            dbs.add_product((tenant_id, tenant_id, "pro", "active"))
        wait_until("every tenant", lambda: all(market_row(dbs, i) for i in ids), first)
        for tenant_id in ids:
            dbs.sql("product", "UPDATE tenants SET plan = 'enterprise' WHERE id = :i", {"i": tenant_id})
        wait_until("every update", lambda: all(market_row(dbs, i)["plan"] == "ENTERPRISE" for i in ids), first)
        time.sleep(1.0)
    finally:
        outs = [stop(first), stop(second)]
    events = [e for out in outs for e in out.events]
    created = [e["tenant_id"] for e in events if e["event"] == "tenant.created"]
    updated = [e["tenant_id"] for e in events if e["event"] == "tenant.updated"]
    assert sorted(created) == ids and sorted(updated) == ids
    batches = [e for e in events if e["event"] == "reconcile.report" and e["trigger"] == "event"]
    assert all(b["counts"]["conflicts"] == 0 and b["counts"]["errors"] == 0 for b in batches)
    assert {out.code for out in outs} == {0}


def test_a_batch_that_finds_a_full_run_holding_the_lock_waits_and_retries(dbs):
    with_trigger(dbs)
    proc = listen(dbs, "pg")
    holder = dbs.engine("marketplace").connect()
    try:
        holder.exec_driver_sql("SELECT pg_advisory_lock(%s)", (lock_key(Shard()),))  # a whole run elsewhere
        holder.commit()
        dbs.add_product(("waits", "Waits", "pro", "active"))
        wait_until("a retry", lambda: events_of(proc, "listen.batch_retry"), proc, timeout=30)
        assert market_row(dbs, "waits") is None
        holder.exec_driver_sql("SELECT pg_advisory_unlock(%s)", (lock_key(Shard()),))
        holder.commit()
        wait_until("the tenant after the lock is free", lambda: market_row(dbs, "waits"), proc, timeout=60)
    finally:
        holder.close()
        out = stop(proc)
    locked = [r for r in out.reports if r["status"] == "locked"]
    assert locked and all(r["trigger"] == "event" for r in locked) and out.code == 0


def _hold_tenant_lock(dbs, tenant_id):
    conn = dbs.engine("marketplace").connect()
    conn.begin()
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:k AS bigint[])) AS k"),
                 {"k": tenant_keys((tenant_id,))})
    return conn


def test_sigterm_mid_batch_lets_the_batch_finish_within_the_grace_and_exits_0(dbs):
    with_trigger(dbs)
    proc = listen(dbs, "pg", "--stop-grace", "10")
    holder = _hold_tenant_lock(dbs, "mid")  # the batch waits for this lock: it is mid-batch
    try:
        dbs.add_product(("mid", "Mid", "pro", "active"))
        wait_until("the batch started", lambda: [e for e in events_of(proc, "lock.acquired")
                                                 if e["run_id"] != reports(proc, "startup")[0]["run_id"]], proc)
        proc.signal(15)
        time.sleep(1.0)
        holder.rollback()
        out = proc.finish(deadline=20)
    finally:
        holder.close()
        proc.kill_if_running()
    assert out.code == 0, out.tail()
    batch = [r for r in out.reports if r["trigger"] == "event"]
    assert len(batch) == 1 and batch[0]["status"] == "success" and batch[0]["counts"]["created"] == 1
    assert market_row(dbs, "mid") is not None


def test_sigterm_mid_batch_past_the_grace_rolls_it_back_and_still_exits_0(dbs):
    with_trigger(dbs)
    proc = listen(dbs, "pg", "--stop-grace", "1", RECONCILE_LOCK_TIMEOUT_MS="60000")
    holder = _hold_tenant_lock(dbs, "stuck")
    try:
        dbs.add_product(("stuck", "Stuck", "pro", "active"))
        wait_until("the batch started", lambda: [e for e in events_of(proc, "lock.acquired")
                                                 if e["run_id"] != reports(proc, "startup")[0]["run_id"]], proc)
        started = time.monotonic()
        proc.signal(15)
        out = proc.finish(deadline=20)
        elapsed = time.monotonic() - started
    finally:
        holder.rollback()
        holder.close()
        proc.kill_if_running()
    assert out.code == 0, out.tail()
    assert elapsed < 15
    batch = [r for r in out.reports if r["trigger"] == "event"]
    assert len(batch) == 1 and batch[0]["status"] == "failed" and "rolled back" in batch[0]["error"]
    assert market_row(dbs, "stuck") is None
    assert [e["event"] for e in out.events][-1] == "schedule.stopped"


def test_event_batches_and_the_startup_run_say_what_triggered_them(dbs):
    with_trigger(dbs)
    proc = listen(dbs, "pg,poll")
    try:
        dbs.add_product(("t", "T", "pro", "active"))
        wait_until("the tenant", lambda: market_row(dbs, "t"), proc)
    finally:
        out = stop(proc)
    triggers = [r["trigger"] for r in out.reports]
    assert triggers[0] == "startup" and set(triggers[1:]) == {"event"}
    event = next(r for r in out.reports if r["trigger"] == "event")
    assert event["source"]["event"] in ("pg", "poll", "pg,poll") and event["source"]["db"] == dbs.product.display


def test_a_run_of_the_cli_is_a_manual_trigger(dbs):
    out = run("plan", env=dbs.env(), deadline=30)
    assert out.report["trigger"] == "manual" and "event" not in out.report["source"]



class _Owner:
    """What a source reports to, recorded (the listener's side of the seam)."""

    def __init__(self) -> None:
        self.full_runs: list[str] = []

    def catch_up(self, source: str, away_s: float) -> None:
        raise AssertionError("the poll source never asks for a catch-up")

    def request_full_run(self, trigger: str) -> None:
        self.full_runs.append(trigger)


def _poll_source(dbs, page_size: int, full_run_above: int):
    from jobs.events.sources import PollSource
    from reconcile.report.logs import get_logger
    from reconcile.settings import load_settings

    settings = load_settings(env=dbs.env())
    queue, owner = EventQueue(window_s=0.01, max_batch=100_000), _Owner()
    source = PollSource(settings, queue, get_logger(), owner)
    source.page_size, source.full_run_above = page_size, full_run_above
    return source, queue, owner


def test_a_poll_reads_more_changed_rows_than_one_page_in_pages_and_announces_each_once(dbs):
    source, queue, owner = _poll_source(dbs, page_size=50, full_run_above=1000)
    with source.session() as conn:
        dbs.add_product(*[(f"p{i:04d}", f"N{i}", "pro", "active") for i in range(180)])
        source.poll_once(conn)
        batch = queue.next_batch(lambda: False)
        assert sorted(batch.ids) == [f"p{i:04d}" for i in range(180)] and owner.full_runs == []
        source.poll_once(conn)  # the same rows again, within the overlap: nothing new to announce
        assert len(queue) == 0 and owner.full_runs == []


def test_a_poll_finding_more_changes_than_batches_should_take_asks_for_one_full_run(dbs):
    source, queue, owner = _poll_source(dbs, page_size=50, full_run_above=120)
    with source.session() as conn:
        dbs.add_product(*[(f"p{i:04d}", f"N{i}", "pro", "active") for i in range(180)])
        source.poll_once(conn)
    assert owner.full_runs == ["catch-up"] and len(queue) == 0
