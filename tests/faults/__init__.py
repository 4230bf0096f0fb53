"""Fault injection: real processes, a real PostgreSQL, and a TCP proxy between them that refuses,
resets, drops or stalls connections at chosen points of the protocol stream.

Layout: `proxy.py` is the proxy (plain sockets and threads); `harness.py` has the phase markers,
the CLI runner with hard deadlines, seeding, the marketplace's full contents and the checks every
test makes; `conftest.py` the fixtures (a reused database pair behind two proxies, an own embedded
server per module for the tests that restart it or change its settings). `test_harness.py` proves
the proxy does what it is told: when it fails, no other verdict here can be trusted.

Runs with the rest of the suite (`pytest`). The temp-directory tests mount a small tmpfs and skip
when not root. Tests set short timeouts through the environment (RECONCILE_NETWORK_TIMEOUT=2 or 3,
RECONCILE_CONNECT_RETRY=0 or 1) and bound every process with a deadline, so a run that hangs is a
failed test, not a hung suite.
"""
