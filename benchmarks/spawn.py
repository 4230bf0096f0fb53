"""Run one command and record its own wall time and peak RSS: `python -I -S spawn.py OUT.json CMD ARGS...`.

Why a trampoline: Linux folds the RSS high-water mark of the image a process replaces at exec into
that process's `ru_maxrss`. A child started straight from the harness (fork/vfork, then exec)
therefore reports at least the harness's own peak (measured here: `python -c pass` started from a
300 MB parent reports 313 MB). This script is a bare interpreter (no site, no imports beyond the
standard library, about 8 MB); the child forked from it starts from that, and `os.wait4` on it
returns the child's own peak. Standard library only, so it runs under `-I -S`.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        sys.stderr.write("usage: spawn.py OUT.json COMMAND [ARGS...]\n")
        return 2
    out_path, command = argv[1], argv[2:]
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(command[0], command)
        except OSError as exc:
            sys.stderr.write(f"spawn: cannot run {command[0]}: {exc.strerror}\n")
        os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    with open(out_path, "w", encoding="utf-8") as fh:
        # ru_maxrss is in KiB on Linux.
        json.dump({"wall_s": wall, "maxrss_kib": usage.ru_maxrss, "exit_code": code,
                   "user_s": usage.ru_utime, "sys_s": usage.ru_stime}, fh)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
