"""Event-driven sync: trigger sources (PostgreSQL LISTEN/NOTIFY, Redis Pub/Sub, `updated_at`
polling) publish tenant ids as hints into one queue; one consumer coalesces them into batches, and
each batch is one run restricted to its ids (`--only`). Level-triggered, like Kubernetes
controllers: a batch re-reads both rows, so a lost, late or repeated event costs latency, never
correctness; the listener's initial full run, the catch-up after a reconnect and the nightly run
are the safety nets.

- `queue`: the coalescing queue every source publishes into (the one seam: `EventQueue.publish`);
- `sources`: the three sources, each reconnecting with backoff and keeping its connection alive;
- `listener`: subscribe, initial full run, batches, catch-ups, stop.
"""
