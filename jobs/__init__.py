"""Entry points: the `tenant-reconcile` CLI and the scheduler process."""

from __future__ import annotations

import os
import sys


def main() -> None:
    """The console script. Kept in this light module so that the stop handling starts before the
    CLI's imports (a few tenths of a second): a SIGTERM or Ctrl-C that lands meanwhile is recorded,
    and the command stops on it as on any later one (jobs.process). One that lands before even that
    (Python's own start-up) is a Ctrl-C here: one line and exit 130, not a traceback."""
    _hold_closed_standard_streams()
    try:
        from jobs.process import catch_signals_early

        catch_signals_early()
        from jobs.cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("tenant-reconcile: interrupted\n")
        sys.stderr.flush()
        os._exit(130)  # sys.exit may still end in Python's own SIGINT death here
    cli_main()


def _hold_closed_standard_streams() -> None:
    """A standard stream the caller closed (`>&-`) gets /dev/null on its descriptor, so that no file
    or socket the command opens takes it (output meant for stdout must never land in one). Python
    has already set sys.stdout to None then; the output stops (reconcile.report.logs.QuietStream)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
