"""What a running process costs, read from /proc: CPU seconds (user + system, all threads) and
memory (VmRSS now, VmHWM its peak so far)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Sample:
    at: float        # monotonic seconds
    cpu_s: float     # user + system since the process started
    rss_mb: float
    hwm_mb: float


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        text = fh.read()
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) ": field 3 (state) is fields[0]
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14 and 15)


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    values = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024.0  # kB
    return values["VmRSS"], values["VmHWM"]


def sample(pid: int) -> Sample:
    rss, hwm = memory_mb(pid)
    return Sample(time.monotonic(), cpu_seconds(pid), rss, hwm)


def cpu_share(first: Sample, last: Sample) -> float | None:
    """CPU used between two samples as a share of one core."""
    wall = last.at - first.at
    return round((last.cpu_s - first.cpu_s) / wall, 3) if wall > 0 else None
