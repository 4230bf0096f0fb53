"""The harness itself: the proxy forwards, and misbehaves exactly as told. These pass on any version
of the tool; when one fails, the fault tests' verdicts cannot be trusted."""

from __future__ import annotations

import socket
import threading
import time

import psycopg2
import pytest

from tests.faults.harness import (
    COMMIT,
    INSERT,
    LOCK,
    SNAPSHOT,
    STAGE_CREATES,
    STAGE_UPDATES,
    UPDATE,
    assert_no_secret,
    assert_success,
    proxied_url,
    run,
    secret_fragments,
    seed_bulk,
    tenant_rows,
)


def dsn(faults, which: str = "product") -> str:
    db = faults.dbs.product if which == "product" else faults.dbs.marketplace
    return proxied_url(db, faults.proxy(which))


def test_a_run_through_pass_through_proxies_succeeds_and_every_phase_marker_is_seen(faults):
    seen = {name: faults.market.add("notify", marker=marker) for name, marker in
            (("lock", LOCK), ("snapshot", SNAPSHOT), ("stage creates", STAGE_CREATES),
             ("stage updates", STAGE_UPDATES), ("insert", INSERT), ("update", UPDATE),
             ("commit", (INSERT, COMMIT)))}
    product_snapshot = faults.product.add("notify", marker=SNAPSHOT)
    seeded = seed_bulk(faults.dbs, new=300, drifted=100, same=100)
    out = run("run", env=faults.env(), deadline=60)
    report = assert_success(out)
    assert report["counts"]["created"] == 300 and report["counts"]["updated"] == 100
    assert len(tenant_rows(faults.dbs)) == len(seeded.product_ids)
    assert faults.product.accepted >= 1 and faults.market.accepted >= 1  # the traffic went through
    assert product_snapshot.fired.is_set(), "the product snapshot marker was not seen"
    missing = [name for name, rule in seen.items() if not rule.fired.is_set()]
    assert not missing, f"phase markers not seen on the marketplace connection: {missing}"


def test_drop_at_a_marker_closes_the_connection(faults):
    faults.product.add("drop", marker=b"SELECT 42")
    conn = psycopg2.connect(dsn(faults))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
            with pytest.raises(psycopg2.OperationalError):
                cur.execute("SELECT 42")
    finally:
        conn.close()


def test_reset_sends_a_rst(faults):
    faults.product.add("reset")
    with socket.create_connection(("127.0.0.1", faults.product.port), timeout=5) as sock:
        sock.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")  # an SSLRequest: any first byte fires it
        with pytest.raises(ConnectionResetError):
            sock.recv(10)
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(dsn(faults))


def test_stall_keeps_the_connection_open_and_silent_and_stalls_new_connections(faults):
    rule = faults.product.add("stall", marker=b"pg_sleep", direction="s2c")
    conn = psycopg2.connect(dsn(faults))
    outcome: list[object] = []

    def query() -> None:
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_sleep(0)")
                outcome.append(cur.fetchone())
        except psycopg2.Error as exc:
            outcome.append(exc)

    worker = threading.Thread(target=query, daemon=True)
    worker.start()
    assert rule.fired.wait(10)
    worker.join(1.5)
    assert worker.is_alive() and not outcome  # the answer never comes, and nothing closed
    # A new connection (what a cancel request opens) is accepted and never answered either.
    with socket.create_connection(("127.0.0.1", faults.product.port), timeout=1) as sock:
        sock.sendall(b"\x00\x00\x00\x10\x04\xd2\x16\x2e" + b"\x00" * 8)  # a CancelRequest
        with pytest.raises(TimeoutError):
            sock.recv(1)
    faults.product.close()  # the test ends: now the client sees the connection close
    worker.join(10)
    assert outcome and isinstance(outcome[0], psycopg2.Error)
    conn.close()


def test_refuse_closes_the_listener(faults):
    psycopg2.connect(dsn(faults)).close()
    faults.product.refuse()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", faults.product.port), timeout=2).close()


def test_a_rule_for_the_nth_connection_leaves_the_others_alone(faults):
    faults.product.add("drop", after=0, connection=2)
    first = psycopg2.connect(dsn(faults))
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(dsn(faults))
    third = psycopg2.connect(dsn(faults))
    for conn in (first, third):
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        conn.close()


def test_hold_pauses_until_released_and_markers_chain_in_order(faults):
    rule = faults.product.add("hold", marker=(b"SELECT 'first'", b"SELECT 'second'"))
    conn = psycopg2.connect(dsn(faults))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 'second'")  # the chain has not seen 'first' yet: not held
        cur.execute("SELECT 'first'")
        assert not rule.fired.is_set()
        threading.Timer(1.0, rule.release).start()
        started = time.monotonic()
        cur.execute("SELECT 'second'")
        assert cur.fetchone() == ("second",)
        assert time.monotonic() - started >= 0.9 and rule.fired.is_set()
    conn.close()


def test_drop_after_n_bytes_counts_the_chosen_direction(faults):
    # s2c: the answer to the marked query is cut after 3 bytes; the client sees a broken connection.
    faults.product.add("drop", marker=b"SELECT repeat", after=3, direction="s2c")
    conn = psycopg2.connect(dsn(faults))
    with conn.cursor() as cur, pytest.raises(psycopg2.OperationalError):
        cur.execute("SELECT repeat('x', 100000)")
    conn.close()


def test_the_secret_check_finds_fragments():
    fragments = secret_fragments()
    assert "Qz#W" in fragments and "%40Kj" in fragments
    with pytest.raises(AssertionError):
        assert_no_secret("error: password Wx@Kj rejected")
    assert_no_secret('{"event":"reconcile.report","run_id":"0123abcd","db":"127.0.0.1:5432/x"}')
