"""The event sources under real connection faults: the LISTEN session terminated by the server
(what a Patroni failover or HAProxy does to it), the Redis connection killed by Redis itself, and a
restart of a server of this module's own. Each time the source reconnects with backoff and catches
up by updated_at, so a change made while it was away (its notification lost) still arrives."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.harness import OwnServer
from tests.listening import (
    events_of,
    listen,
    market_row,
    redis_client,
    stop,
    wait_until,
    with_trigger,
)


def _catch_up_found(proc, source):
    return [e for e in events_of(proc, "listen.catch_up") if e["source"] == source and e["tenants"] >= 1]


def test_a_terminated_listen_session_reconnects_and_catches_up_what_it_missed(dbs):
    with_trigger(dbs)
    proc = listen(dbs, "pg")
    try:
        # Kill the LISTEN session and, in the same statement, change a tenant: its notification has
        # no listener to go to, so only the catch-up can bring it.
        dbs.sql("product", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE application_name = 'tenant-reconcile listen' AND datname = current_database()")
        dbs.add_product(("missed", "Missed", "pro", "active"))
        wait_until("the missed tenant", lambda: market_row(dbs, "missed"), proc)
    finally:
        out = stop(proc)
    assert out.code == 0, out.tail()
    names = [e["event"] for e in out.events]
    assert "listen.disconnected" in names and "listen.reconnected" in names
    assert [e for e in out.events if e["event"] == "listen.catch_up" and e["tenants"] >= 1]


def test_a_killed_redis_connection_reconnects_and_catches_up_by_updated_at(dbs):
    redis = redis_client()
    proc = listen(dbs, "redis")
    channel = proc.channel  # type: ignore[attr-defined]
    try:
        name = f"tenant-reconcile-listen-{proc.proc.pid}"
        clients = [c for c in redis.client_list() if c.get("name") == name]
        assert clients, "the listener's Redis connection is not named after its process"
        dbs.add_product(("lost", "Lost", "pro", "active"))
        redis.client_kill_filter(_id=clients[0]["id"])
        redis.publish(channel, "lost")  # nobody subscribed any more: this one is lost
        wait_until("the catch-up", lambda: _catch_up_found(proc, "redis"), proc)
        wait_until("the lost tenant", lambda: market_row(dbs, "lost"), proc)
    finally:
        out = stop(proc)
    assert out.code == 0, out.tail()
    assert [e for e in out.events if e["event"] == "listen.reconnected" and e["source"] == "redis"]


@pytest.fixture()
def own_pair(own_server: OwnServer) -> Iterator[tuple[OwnServer, object]]:
    dbs = own_server.pair()
    try:
        yield own_server, dbs
    finally:
        own_server.drop(dbs)


def test_a_restart_of_the_server_is_survived_and_changes_made_meanwhile_arrive(own_pair):
    server, dbs = own_pair
    with_trigger(dbs)
    proc = listen(dbs, "pg")
    try:
        server.restart("fast")
        dbs.dispose()  # the test's own pooled sessions died with the server too
        dbs.add_product(("after-restart", "After", "pro", "active"))
        wait_until("the tenant changed after the restart", lambda: market_row(dbs, "after-restart"), proc,
                   timeout=60)
    finally:
        out = stop(proc)
    assert out.code == 0, out.tail()
    assert [e for e in out.events if e["event"] == "listen.reconnected"]
    assert "Traceback" not in out.stderr
