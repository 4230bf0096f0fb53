"""The floor: COPY-out of both tenant tables (id, name, plan, status, unsorted) to /dev/null, one
after the other, in its own process. Nothing can read both tables faster than this."""

from __future__ import annotations

import json
import sys
import time

import psycopg2

QUERIES = ("COPY (SELECT id, name, plan, status FROM tenants) TO STDOUT",
           'COPY (SELECT id, name, plan, status FROM "Tenant") TO STDOUT')


def run(product_dsn: str, market_dsn: str) -> dict[str, float]:
    started = time.perf_counter()
    rows = 0
    with open("/dev/null", "wb") as sink:
        for dsn, query in zip((product_dsn, market_dsn), QUERIES, strict=True):
            conn = psycopg2.connect(dsn)
            try:
                with conn.cursor() as cur:
                    cur.copy_expert(query, sink, size=1 << 20)
                    rows += cur.rowcount
            finally:
                conn.close()
    return {"rows": rows, "seconds": time.perf_counter() - started}


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1], sys.argv[2])))
