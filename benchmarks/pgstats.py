"""Statements, transactions and connections of one database role, from the server's own counters.

The listener under test logs in as a role of its own, so `pg_stat_statements` (per role, database
and normalized statement) separates what it sent from what the harness and the load generator
sent. Counts are the difference of two snapshots, never a reset (the server may be shared).
Transactions are the role's COMMIT and ROLLBACK statements (psycopg2 opens each transaction with
an explicit BEGIN; autocommitted statements such as a LISTEN connection's keepalive are not
counted as transactions). Connections are the server log's `connection authorized` lines for the
role (the private server logs every connection).
"""

from __future__ import annotations

import re
from contextlib import closing
from typing import Any

import psycopg2

SNAPSHOT_SQL = """
SELECT d.datname, s.queryid, s.calls, s.query
FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid JOIN pg_roles r ON r.oid = s.userid
WHERE r.rolname = %(role)s AND d.datname = ANY(%(dbs)s)
"""
TOP = 6

Snapshot = dict[tuple[str, int], tuple[int, str]]


def available(admin_dsn: str) -> bool:
    """True when pg_stat_statements is loaded (and its view installed in the admin database)."""
    with closing(psycopg2.connect(admin_dsn)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 'pg_stat_statements' = ANY(string_to_array(current_setting("
                        "'shared_preload_libraries'), ', '))")
            if not cur.fetchone()[0]:
                return False
            cur.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    return True


def snapshot(admin_dsn: str, role: str, databases: list[str]) -> Snapshot:
    with closing(psycopg2.connect(admin_dsn)) as conn, conn.cursor() as cur:
        cur.execute(SNAPSHOT_SQL, {"role": role, "dbs": databases})
        rows = cur.fetchall()
        conn.rollback()
    return {(db, qid): (calls, query) for db, qid, calls, query in rows}


def evicted(admin_dsn: str) -> int:
    """Entries pg_stat_statements dropped for room since its last reset (then counts are low)."""
    with closing(psycopg2.connect(admin_dsn)) as conn, conn.cursor() as cur:
        cur.execute("SELECT dealloc FROM pg_stat_statements_info")
        return int(cur.fetchone()[0])


def _is_transaction_end(query: str) -> bool:
    return query.lstrip().upper().startswith(("COMMIT", "ROLLBACK", "END", "ABORT"))


def difference(before: Snapshot, after: Snapshot, database: str) -> dict[str, Any]:
    """Statements and transactions the role ran in `database` between the snapshots, with the most
    frequent statements (normalized text, shortened)."""
    calls: dict[str, int] = {}
    statements = transactions = 0
    for (db, qid), (count, query) in after.items():
        if db != database:
            continue
        delta = count - before.get((db, qid), (0, ""))[0]
        if delta <= 0:
            continue
        statements += delta
        if _is_transaction_end(query):
            transactions += delta
        text = " ".join(query.split())[:90]
        calls[text] = calls.get(text, 0) + delta
    top = sorted(calls.items(), key=lambda kv: -kv[1])[:TOP]
    return {"statements": statements, "transactions": transactions,
            "top": [{"calls": n, "statement": text} for text, n in top]}


def log_offset(path: str | None) -> int:
    if path is None:
        return 0
    with open(path, "rb") as fh:
        return fh.seek(0, 2)


def connections(path: str | None, start: int, role: str) -> dict[str, int] | None:
    """`connection authorized` lines for `role` in the server log since byte `start`, per database."""
    if path is None:
        return None
    pattern = re.compile(rb"connection authorized: user=" + re.escape(role.encode()) + rb" database=(\S+)")
    out: dict[str, int] = {}
    with open(path, "rb") as fh:
        fh.seek(start)
        for line in fh:
            match = pattern.search(line)
            if match:
                name = match[1].decode()
                out[name] = out.get(name, 0) + 1
    return out
