"""Fixtures of the fault suite: a database pair behind two proxies; an own server per module.

Creating and dropping a database pair costs a few seconds on a busy server, and most fault tests
change no schema, so `faults` reuses one pair per test process (xdist worker), emptied between
tests (the sessions a stalled or killed run left behind are ended first). Tests that change a schema or a database
setting take the project's fresh `dbs` pair instead."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.harness import Faults, OwnServer, faults_for, reset_pair
from tests.pgtools import Databases


@pytest.fixture(scope="session")
def reusable_pair(pg_server) -> Iterator[Databases]:
    from tests.conftest import _fresh_pair

    with _fresh_pair(pg_server) as databases:
        yield databases


@pytest.fixture()
def reused_dbs(reusable_pair: Databases) -> Databases:
    """The reusable pair, empty: no tenants, no inbound rows, no fault trigger, no open session."""
    reset_pair(reusable_pair)
    return reusable_pair


@pytest.fixture()
def faults(reused_dbs: Databases) -> Iterator[Faults]:
    """Each database of the pair behind its own FaultProxy. The proxies close (and with them any
    stalled session) when the test ends."""
    with faults_for(reused_dbs) as value:
        yield value


@pytest.fixture()
def fresh_faults(dbs: Databases) -> Iterator[Faults]:
    """Like `faults`, on a fresh pair the test may alter."""
    with faults_for(dbs) as value:
        yield value


@pytest.fixture(scope="module")
def own_server() -> Iterator[OwnServer]:
    """An embedded server of this module alone: tests may restart it or change its settings."""
    from reconcile.testing.embedded import embedded_postgres

    with embedded_postgres() as handle:
        server = OwnServer(handle)
        try:
            yield server
        finally:
            server.dispose()
