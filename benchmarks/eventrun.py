"""The moving parts of one event-benchmark run: the listener as a child process (its JSON log read
from a file, so a chatty listener never blocks on a full pipe), the load generator's process, the
drain, and the stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from typing import Any

from benchmarks import eventlag, procstat
from benchmarks.data import dsn
from benchmarks.reconcile import REPO, _cli

DRAIN_CHECK_S = 0.5
KEPT_UP = 0.95  # the generator kept up when it committed at least this share of the asked rate


def run_cli(argv: list[str], env: dict[str, str], timeout: float = 600) -> tuple[int, str, str]:
    proc = subprocess.run([*_cli(), *argv], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          check=False)
    return proc.returncode, proc.stdout, proc.stderr


class Listener:
    """`tenant-reconcile ARGV` running; stdout and stderr go to temp files."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self._out = tempfile.TemporaryFile()
        self._err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([*_cli(), *argv], env=env, cwd=REPO, stdout=self._out, stderr=self._err,
                                     stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid
        self._events: list[dict[str, Any]] = []
        self._read = 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def events(self) -> list[dict[str, Any]]:
        """Every JSON line so far (read on from where the last call stopped)."""
        self._out.seek(self._read)
        data = self._out.read()
        end = data.rfind(b"\n") + 1
        self._read += end
        for line in data[:end].splitlines():
            if line.startswith(b"{"):
                try:
                    self._events.append(json.loads(line))
                except ValueError:
                    continue
        return self._events

    def reports(self, trigger: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("event") == "reconcile.report"
                and (trigger is None or e.get("trigger") == trigger)]

    def count_reports(self, trigger: str) -> int:
        return len(self.reports(trigger))

    def wait_for_startup(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.reports("startup"):
            if not self.alive() or time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def tail(self, limit: int = 600) -> str:
        parts = []
        for file in (self._out, self._err):
            file.seek(0, os.SEEK_END)
            file.seek(max(0, file.tell() - limit))
            parts.append(file.read().decode("utf-8", "replace"))
        return " | ".join(p.strip() for p in parts if p.strip())

    def summary(self) -> dict[str, Any]:
        """What the listener said: its reports by trigger and status, and its listen.* events."""
        events = self.events()
        reports = [e for e in events if e.get("event") == "reconcile.report"]
        return {"reports": dict(Counter(str(e.get("trigger")) for e in reports)),
                "report_status": dict(Counter(str(e.get("status")) for e in reports)),
                "listen_events": dict(Counter(e["event"] for e in events
                                              if str(e.get("event", "")).startswith("listen."))),
                "warnings": dict(Counter(e["event"] for e in events if e.get("level") in ("warning", "error"))),
                "batch_ms": batch_timings([e for e in reports if e.get("trigger") == "event"])}

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait(10)


def batch_timings(reports: list[dict[str, Any]]) -> dict[str, Any] | None:
    """How long the event batches took by their own reports: total p50/p99/max, each phase's mean."""
    timings = [r.get("timings_ms") or {} for r in reports]
    totals = sorted(t["total"] for t in timings if "total" in t)
    if not totals:
        return None
    phases: dict[str, list[float]] = {}
    for t in timings:
        for phase, value in t.items():
            phases.setdefault(phase, []).append(value)
    return {"p50": round(eventlag.percentile(totals, 0.5), 1), "p99": round(eventlag.percentile(totals, 0.99), 1),
            "max": round(totals[-1], 1), "mean_by_phase": {k: round(sum(v) / len(v), 1) for k, v in phases.items()}}


def _config(bench: Any, run: Any, out_path: str) -> dict[str, Any]:
    config = {"product": dsn(bench.url(run.product)), "rate": run.rate, "seconds": run.seconds,
              "workers": bench.args.workers, "random_state": bench.args.random_state, "out": out_path}
    if run.source == "redis":
        config.update({"redis_url": bench.args.redis_url, "channel": run.channel})
    return config


def _sample_until_done(gen: subprocess.Popen, listener: Listener, every: float) -> list[procstat.Sample]:
    samples = [procstat.sample(listener.pid)]
    next_at = samples[0].at + every
    while gen.poll() is None and listener.alive():
        time.sleep(max(0.0, min(0.2, next_at - time.monotonic())))
        if time.monotonic() >= next_at:
            samples.append(procstat.sample(listener.pid))
            next_at += every
    return samples


def generate(bench: Any, run: Any, listener: Listener, observer: eventlag.Observer) -> tuple[Any, dict[str, Any]]:
    """Run the load generator; sample the listener meanwhile. (changes, window) or (None, {}) on failure."""
    from benchmarks.events import SAMPLE_S, SOAK_SAMPLE_S

    with tempfile.TemporaryDirectory(prefix="rcev-load-") as tmp:
        cfg, out = os.path.join(tmp, "config.json"), os.path.join(tmp, "changes.tsv")
        with open(cfg, "w", encoding="utf-8") as fh:
            json.dump(_config(bench, run, out), fh)
        gen = subprocess.Popen([sys.executable, "-m", "benchmarks.eventload", cfg], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started = gen.stdout.readline()  # printed when the first change is due
        if not started:
            gen.wait()
            run.failures.append(f"load generator did not start: {gen.stderr.read().strip()[-300:]}")
            return None, {}
        samples = _sample_until_done(gen, listener, SOAK_SAMPLE_S if bench.args.soak else SAMPLE_S)
        load_sample = procstat.sample(listener.pid) if listener.alive() else samples[-1]
        if not listener.alive():
            gen.kill()
        rest, err = gen.communicate()
        if not listener.alive() or gen.returncode != 0:
            run.failures.append(f"load generator exit {gen.returncode} ({err.strip()[-300:]}); listener "
                                f"{'alive' if listener.alive() else 'died: ' + listener.tail()}")
            return None, {}
        changes = eventlag.read_changes(out)
    stats = json.loads(rest.strip().splitlines()[-1])
    run.result.update(load_figures(changes, stats, run.rate))
    return changes, {"samples": samples, "load_sample": load_sample, "load_end": stats["last_commit"]}


def load_figures(changes: list[eventlag.SentChange], stats: dict[str, Any], rate: int) -> dict[str, Any]:
    kinds = Counter(c.kind for c in changes)
    late = sorted(c.commit - c.due for c in changes)
    span = stats["last_commit"] - stats["first_due"]
    achieved = len(changes) / span if span > 0 else None
    return {"sent_by_kind": dict(kinds), "target_rate": rate, "achieved_rate": achieved and round(achieved, 1),
            "load_kept_up": achieved is not None and achieved >= KEPT_UP * rate,
            "product_commit_after_due_ms": {"p50": _ms(eventlag.percentile(late, 0.5)),
                                            "p99": _ms(eventlag.percentile(late, 0.99)),
                                            "max": _ms(late[-1] if late else None)}}


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def drain(changes: list[eventlag.SentChange], observer: eventlag.Observer, listener: Listener,
          timeout: float) -> tuple[list[float | None], float | None]:
    """Wait until every change is delivered (or `timeout`); (delivery times, last delivery or None)."""
    deadline = time.monotonic() + timeout
    while True:
        times = eventlag.delivery_times(changes, list(observer.seen))
        if all(t is not None for t in times):
            return times, max(times, default=None)  # type: ignore[type-var]
        if time.monotonic() > deadline or not listener.alive():
            return times, None
        time.sleep(DRAIN_CHECK_S)


def stop_listener(run: Any, listener: Listener, timeout: float) -> None:
    """SIGTERM; it must exit 0 within `timeout`."""
    if not listener.alive():
        run.result["stop"] = {"exit_code": listener.proc.returncode, "seconds": None}
        run.failures.append(f"the listener exited on its own ({listener.proc.returncode}): {listener.tail()}")
        return
    asked = time.monotonic()
    listener.proc.send_signal(signal.SIGTERM)
    try:
        code = listener.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        code = None
    run.result["stop"] = {"exit_code": code, "seconds": round(time.monotonic() - asked, 2)}
    if code != 0:
        run.failures.append(f"SIGTERM: exit {code} (expected 0): {listener.tail()}")
