"""A private PostgreSQL server for one benchmark run: `initdb` in a temp dir, started on a free
loopback port with the settings the measurement needs (`pg_stat_statements` preloaded, every
connection logged), stopped and deleted afterwards.

The server binaries are the machine's own (`pg_config --bindir`, else the newest
`/usr/lib/postgresql/*/bin`) or `--pg-bin DIR`. As root, the server runs as the `postgres` OS user
(initdb and pg_ctl refuse root).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

SERVER_USER = "postgres"
SETTINGS = {
    "shared_preload_libraries": "'pg_stat_statements'",
    "pg_stat_statements.track": "top",          # what a client sends, not what a trigger runs inside it
    "pg_stat_statements.track_utility": "on",   # BEGIN, COMMIT, ROLLBACK, LISTEN, SET count too
    "pg_stat_statements.max": "20000",
    "log_connections": "on",
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "200",
}


@dataclass
class PrivateServer:
    workdir: str
    bindir: str
    port: int
    version: str = ""

    @property
    def admin_url(self) -> str:
        return f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/postgres"

    @property
    def log_path(self) -> str:
        return os.path.join(self.workdir, "server.log")


def find_bindir(explicit: str | None) -> str:
    """Where initdb and pg_ctl are: `explicit`, else pg_config's, else the newest Debian one."""
    candidates = [explicit] if explicit else []
    if not explicit:
        with suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True, timeout=10)
            candidates.append(out.stdout.strip())
        versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2] or 0),
                          reverse=True)
        candidates += versions
    for path in candidates:
        if path and os.access(os.path.join(path, "initdb"), os.X_OK) and os.access(
                os.path.join(path, "pg_ctl"), os.X_OK):
            return path
    raise RuntimeError("no PostgreSQL server binaries (initdb, pg_ctl) found: pass --pg-bin DIR, or --url ADMIN_URL "
                       "of a server with pg_stat_statements preloaded")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _user() -> str | None:
    """The OS user the server runs as: `postgres` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise RuntimeError(f"running as root needs an OS user {SERVER_USER!r} to run the server") from None
    return SERVER_USER


def _run(argv: list[str], user: str | None, timeout: float = 120) -> None:
    proc = subprocess.run(argv, user=user, capture_output=True, text=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL, start_new_session=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{os.path.basename(argv[0])} failed ({proc.returncode}): "
                           f"{(proc.stderr or proc.stdout).strip()[-600:]}")


def _start(server: PrivateServer, user: str | None) -> None:
    data = os.path.join(server.workdir, "data")
    _run([os.path.join(server.bindir, "initdb"), "-D", data, "-U", SERVER_USER, "--auth=trust", "-E", "UTF8",
          "--locale=C", "--no-sync"], user)
    settings = {**SETTINGS, "port": str(server.port), "unix_socket_directories": f"'{server.workdir}'"}
    with open(os.path.join(data, "postgresql.conf"), "a", encoding="utf-8") as conf:
        conf.write("\n# benchmark settings\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
    _run([os.path.join(server.bindir, "pg_ctl"), "-D", data, "-l", server.log_path, "-w", "-t", "60", "start"], user)


def _stop(server: PrivateServer, user: str | None) -> None:
    data = os.path.join(server.workdir, "data")
    if os.path.exists(os.path.join(data, "postmaster.pid")):
        with suppress(Exception):
            _run([os.path.join(server.bindir, "pg_ctl"), "-D", data, "-m", "fast", "-w", "-t", "30", "stop"], user)
    shutil.rmtree(server.workdir, ignore_errors=True)


@contextmanager
def private_server(bindir: str | None = None) -> Iterator[PrivateServer]:
    """A started server; stopped and its directory deleted on exit, whatever happened."""
    user = _user()
    server = PrivateServer(tempfile.mkdtemp(prefix="rcev-pg-"), find_bindir(bindir), _free_port())
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(server.workdir, entry.pw_uid, entry.pw_gid)
    try:
        _start(server, user)
        yield server
    finally:
        _stop(server, user)
