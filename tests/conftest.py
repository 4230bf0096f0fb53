"""A real PostgreSQL for every test: RECONCILE_TEST_DATABASE_URL if set, else an embedded server.

Each test gets two fresh databases (product + marketplace) cloned from session templates that
already hold both schemas (docs/schemas.md), and they are dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import pytest
import sqlalchemy as sa

from reconcile.db.engines import engine_for
from reconcile.db.urls import DatabaseUrl
from reconcile.testing.schema import init_marketplace, init_product
from tests.pgtools import Databases, Server

ENV_URL = "RECONCILE_TEST_DATABASE_URL"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    url = os.environ.get(ENV_URL)
    if url:
        server = Server(DatabaseUrl.parse(url, ENV_URL), embedded=False)
        yield from _with_templates(server)
        return
    from reconcile.testing.embedded import embedded_postgres

    with embedded_postgres() as handle:
        server = Server(DatabaseUrl.parse(handle.url("postgres"), "embedded"), embedded=True)
        yield from _with_templates(server)


def _with_templates(server: Server) -> Iterator[Server]:
    tag = uuid.uuid4().hex[:8]
    server.product_template = f"rc_tpl_{tag}_p"
    server.marketplace_template = f"rc_tpl_{tag}_m"
    server.create_database(server.product_template)
    server.create_database(server.marketplace_template)
    init_product(server.url_for(server.product_template))
    init_marketplace(server.url_for(server.marketplace_template))
    try:
        yield server
    finally:
        server.drop_database(server.product_template)
        server.drop_database(server.marketplace_template)
        server.dispose()


@contextmanager
def _fresh_pair(pg_server: Server) -> Iterator[Databases]:
    tag = uuid.uuid4().hex[:10]
    names = (f"rc_{tag}_p", f"rc_{tag}_m")
    pg_server.create_database(names[0], template=pg_server.product_template)
    pg_server.create_database(names[1], template=pg_server.marketplace_template)
    databases = Databases(pg_server.url_for(names[0]), pg_server.url_for(names[1]))
    try:
        yield databases
    finally:
        databases.dispose()
        for name in names:
            pg_server.drop_database(name)


@pytest.fixture()
def dbs(pg_server: Server) -> Iterator[Databases]:
    """A fresh product DB and marketplace DB with both schemas, dropped after the test."""
    with _fresh_pair(pg_server) as databases:
        yield databases


@pytest.fixture()
def more_dbs(pg_server: Server) -> Iterator[Callable[[], Databases]]:
    """more_dbs() -> another fresh pair, for tests comparing two runs side by side."""
    with ExitStack() as stack:
        yield lambda: stack.enter_context(_fresh_pair(pg_server))


@pytest.fixture()
def engine_of():
    """engine_of(DatabaseUrl) -> Engine, disposed after the test."""
    engines: list[sa.Engine] = []

    def make(db: DatabaseUrl) -> sa.Engine:
        engine = engine_for(db)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.dispose()
