"""Entry points: the `tenant-reconcile` CLI and the scheduler process."""

from __future__ import annotations

import os
import sys


def main() -> None:
    """The console script. Kept in this light module so that the stop handling starts before the
    CLI's imports (a few tenths of a second): a SIGTERM or Ctrl-C that lands meanwhile is recorded,
    and the command stops on it as on any later one (jobs.process). One that lands before even that
    (Python's own start-up) is a Ctrl-C here: one line and exit 130, not a traceback."""
    try:
        from jobs.process import catch_signals_early

        catch_signals_early()
        from jobs.cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("tenant-reconcile: interrupted\n")
        sys.stderr.flush()
        os._exit(130)  # sys.exit may still end in Python's own SIGINT death here
    cli_main()
