"""Entry points: the `tenant-reconcile` CLI and the scheduler process."""

from __future__ import annotations

import os
import sys


def main() -> None:
    """The console script. Kept in this light module so that a Ctrl-C that lands while the CLI is
    still importing (a few tenths of a second) is one line and exit 130, not a traceback."""
    try:
        from jobs.cli import main as cli_main
    except KeyboardInterrupt:
        sys.stderr.write("tenant-reconcile: interrupted\n")
        sys.stderr.flush()
        os._exit(130)  # sys.exit may still end in Python's own SIGINT death here
    cli_main()
