"""Benchmark of the event path: `python -m benchmarks.events --sources pg,redis,poll --rates 10,100,1000`.

For each source and rate: fresh databases with N tenants in step, `tenant-reconcile schedule
--listen SOURCE` as a real child process, past its startup full run; then a load generator (its own
process, open loop) changes product tenants at the rate for `--seconds`. Measured: product commit ->
marketplace commit lag per change (p50/p95/p99/max, delivered, lost after a drain timeout), the
listener's statements, transactions and connections per change on both databases, its CPU share and
RSS; then SIGTERM (must exit 0) and a full `plan` (must find nothing to do). `--soak SECONDS`: one
source at one rate for long, the listener's RSS sampled every 10 s. Prints a table, then one JSON
line with every figure (the last line on stdout); exits 1 when a change was lost, the final plan is
not empty, or the listener failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import URL

from benchmarks import eventlag, pgstats, procstat
from benchmarks.data import dsn, load
from benchmarks.eventrun import Listener, run_cli
from benchmarks.reconcile import REPO, _autocommit, _clone, run_and_print
from reconcile.db.urls import DatabaseUrl

SOURCES = ("pg", "redis", "poll")
IDLE_CRON = "0 0 1 1 *"   # the cron's own full run never comes during a benchmark
STARTUP_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 30.0
SAMPLE_S, SOAK_SAMPLE_S = 1.0, 10.0
# Targets (2 cores): p99 lag at the rates they are stated for, CPU at 100 changes/s, zero lost.
P99_TARGET_MS = {100: 1000.0, 1000: 2000.0}
CPU_TARGET = 0.5
ROLE_GRANTS = {
    "product": 'GRANT CONNECT ON DATABASE "{db}" TO {role}; GRANT USAGE ON SCHEMA public TO {role}; '
               "GRANT SELECT ON tenants TO {role};",
    "marketplace": 'GRANT CONNECT ON DATABASE "{db}" TO {role}; GRANT USAGE ON SCHEMA public TO {role}; '
                   'GRANT SELECT, INSERT, UPDATE ON "Tenant", inbound_connections, inbound_addresses TO {role}; '
                   'GRANT SELECT ON "MarketplaceConnection" TO {role};',
}


@dataclass
class Bench:
    """What every run of one benchmark shares."""

    args: argparse.Namespace
    admin: DatabaseUrl
    tag: str
    version: int
    server: dict[str, Any]
    log_path: str | None
    stats: bool = False
    databases: list[str] = field(default_factory=list)

    @property
    def role(self) -> str:
        return self.tag  # the listener's own login: its statements are told apart by role

    def url(self, database: str, role: str | None = None) -> DatabaseUrl:
        url = self.admin.url.set(database=database)
        if not role:
            return DatabaseUrl(url)
        # The role logs in without a password (trust on the benchmark's own server): a new URL with
        # the admin's host, port and options but none of its credentials.
        return DatabaseUrl(URL.create(url.drivername, username=role, host=url.host, port=url.port, database=database,
                                      query=url.query))

    def sql(self, database: str, statement: str) -> None:
        _autocommit(self.url(database), statement)


# -- the server and the data ---------------------------------------------------------------------

@contextmanager
def server(args: argparse.Namespace, say: Any) -> Any:
    """(admin URL, server log or None, kind): `--url`, else a private server started for this run."""
    if args.url:
        yield DatabaseUrl.parse(args.url, "--url"), None, "url"
        return
    from benchmarks.privatepg import private_server

    with private_server(args.pg_bin) as pg:
        say(f"private PostgreSQL on 127.0.0.1:{pg.port} ({pg.bindir})")
        yield DatabaseUrl.parse(pg.admin_url, "private"), pg.log_path, "private"


def prepare(bench: Bench, say: Any) -> tuple[str, str]:
    """The role, and template databases with N tenants in step, the marketplace trigger that reports
    each write, and the listener role's grants; every run clones them."""
    _autocommit(bench.admin, f"CREATE ROLE {bench.role} LOGIN")
    product, market = f"{bench.tag}_tp", f"{bench.tag}_tm"
    for name in (product, market):
        _autocommit(bench.admin, f'CREATE DATABASE "{name}"')
        bench.databases.append(name)
    say(f"loading {bench.args.tenants:,} tenants (product and an in-step marketplace) …")
    data = load(bench.url(product), bench.url(market), bench.args.tenants, 0.0, bench.args.random_state)
    say(f"loaded in {data.load_seconds:.1f}s")
    bench.sql(market, eventlag.MARKETPLACE_TRIGGER_SQL)
    bench.sql(product, ROLE_GRANTS["product"].format(db=product, role=bench.role))
    bench.sql(market, ROLE_GRANTS["marketplace"].format(db=market, role=bench.role))
    bench.stats = pgstats.available(dsn(bench.admin))
    if not bench.stats:
        say("pg_stat_statements is not loaded on this server: statements are not counted")
    return product, market


def clone_pair(bench: Bench, templates: tuple[str, str], name: str) -> tuple[str, str]:
    pair = (f"{name}_p", f"{name}_m")
    for new, template in zip(pair, templates, strict=True):
        # Grants on the database itself are not copied by a template; on its tables they are.
        _clone(bench.admin, new, template, bench.version)
        bench.databases.append(new)
    bench.sql(pair[0], f'GRANT CONNECT ON DATABASE "{pair[0]}" TO {bench.role}')
    bench.sql(pair[1], f'GRANT CONNECT ON DATABASE "{pair[1]}" TO {bench.role}')
    return pair


def drop(bench: Bench, names: list[str]) -> None:
    for name in names:
        _autocommit(bench.admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in bench.databases:
            bench.databases.remove(name)


# -- one source at one rate ----------------------------------------------------------------------

@dataclass
class Run:
    source: str
    rate: int
    seconds: float
    product: str
    market: str
    channel: str
    result: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def listener_env(bench: Bench, run: Run) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RECONCILE_", "PRODUCT_DATABASE_URL", "MARKETPLACE_DATABASE_URL", "DATABASE_URL",
                                "REDIS_URL", "JOB_COMPLETION_INDEX", "INBOUND_DOMAIN"))}
    env.update({"PRODUCT_DATABASE_URL": dsn(bench.url(run.product, bench.role)),
                "MARKETPLACE_DATABASE_URL": dsn(bench.url(run.market, bench.role)),
                # The guard is behaviour, not what is measured.
                "RECONCILE_MAX_ARCHIVE": str(10**9), "RECONCILE_MAX_ARCHIVE_RATIO": "1.0"})
    if run.source == "redis":
        env["REDIS_URL"] = bench.args.redis_url
    return env


def prepare_source(bench: Bench, run: Run, env: dict[str, str]) -> None:
    """pg: the tool's own trigger (install-trigger, as a DBA would run it); poll: an index on updated_at."""
    if run.source == "pg":
        code, _, err = run_cli(["install-trigger", "--product-url", dsn(bench.url(run.product))], env)
        if code != 0:
            raise RuntimeError(f"install-trigger exit {code}: {err.strip()[-300:]}")
    elif run.source == "poll":
        bench.sql(run.product, "CREATE INDEX tenants_updated_at ON tenants (updated_at)")


def listener_argv(bench: Bench, run: Run) -> list[str]:
    argv = ["schedule", "--cron", IDLE_CRON, "--listen", run.source]
    if run.source == "redis":
        argv += ["--redis-channel", run.channel]
    if run.source == "poll":
        argv += ["--poll-interval", f"{bench.args.poll_interval:g}"]
    return argv


def one_run(bench: Bench, templates: tuple[str, str], source: str, rate: int, seconds: float, say: Any) -> Run:
    name = f"{bench.tag}_{source}_{rate}"
    product, market = clone_pair(bench, templates, name)
    run = Run(source, rate, seconds, product, market, f"rcev:{bench.tag}:{source}:{rate}")
    env = listener_env(bench, run)
    try:
        prepare_source(bench, run, env)
        observer = eventlag.Observer(dsn(bench.url(market))).start()
        listener = Listener(listener_argv(bench, run), env)
        try:
            measure_run(bench, run, listener, observer, say)
        finally:
            observer.stop()
            listener.kill()
            run.result["listener_log"] = listener.summary()
        final_plan(run, env, say)
    finally:
        drop(bench, [product, market])
    return run


def measure_run(bench: Bench, run: Run, listener: Listener, observer: eventlag.Observer, say: Any) -> None:
    from benchmarks.eventrun import drain, generate, stop_listener

    if not listener.wait_for_startup(STARTUP_TIMEOUT_S):
        run.failures.append(f"no startup report: {listener.tail()}")
        return
    say(f"{run.source} at {run.rate}/s: startup run done; {run.seconds:g}s of changes …")
    before = statements_snapshot(bench, run)
    changes, window = generate(bench, run, listener, observer)
    if changes is None:
        return
    times, drained_at = drain(changes, observer, listener, bench.args.drain_timeout + bench.args.poll_interval)
    after = statements_snapshot(bench, run)
    end = procstat.sample(listener.pid) if listener.alive() else None
    run.result.update(eventlag.lag_summary(changes, times))
    run.result["drain_s"] = round(drained_at - window["load_end"], 2) if drained_at else None
    run.result["listener"] = listener_figures(window, end, bench.args.soak is not None)
    run.result["statements"] = statement_figures(bench, run, before, after, listener)
    stop_listener(run, listener, STOP_TIMEOUT_S)
    if run.result["lost"]:
        run.failures.append(f"{run.result['lost']} changes lost, e.g. {run.result['lost_examples'][:3]}")


def statements_snapshot(bench: Bench, run: Run) -> dict[str, Any]:
    snap: dict[str, Any] = {"log": pgstats.log_offset(bench.log_path)}
    if bench.stats:
        snap["stats"] = pgstats.snapshot(dsn(bench.admin), bench.role, [run.product, run.market])
    return snap


def statement_figures(bench: Bench, run: Run, before: dict[str, Any], after: dict[str, Any],
                      listener: Listener) -> dict[str, Any] | None:
    batches = max(listener.count_reports("event"), 1)
    sent = max(run.result.get("sent", 0), 1)
    out: dict[str, Any] = {"batches": listener.count_reports("event"),
                           "mean_batch": round(run.result.get("delivered", 0) / batches, 1)}
    conns = pgstats.connections(bench.log_path, before["log"], bench.role)
    if bench.stats:
        for side, database in (("marketplace", run.market), ("product", run.product)):
            figures = pgstats.difference(before["stats"], after["stats"], database)
            figures.update({"per_change": round(figures["statements"] / sent, 2),
                            "transactions_per_change": round(figures["transactions"] / sent, 3),
                            "per_batch": round(figures["statements"] / batches, 1),
                            "connections": None if conns is None else conns.get(database, 0)})
            out[side] = figures
        out["evicted"] = pgstats.evicted(dsn(bench.admin))
    return out


def listener_figures(window: dict[str, Any], end: procstat.Sample | None, soak: bool) -> dict[str, Any]:
    first, last = window["samples"][0], window["load_sample"]
    samples: list[procstat.Sample] = [*window["samples"], last] if last.at > window["samples"][-1].at else \
        window["samples"]
    out = {"cpu_share": procstat.cpu_share(first, last), "cpu_s": round(last.cpu_s - first.cpu_s, 2),
           "rss_mb": {"start": round(first.rss_mb, 1), "end": round((end or last).rss_mb, 1),
                      "max_sampled": round(max(s.rss_mb for s in samples), 1),
                      "peak": round((end or last).hwm_mb, 1)}}
    if soak:
        out["rss_series_mb"] = [[round(s.at - first.at), round(s.rss_mb, 1)] for s in samples]
        out["rss_flat"] = rss_flat([s.rss_mb for s in samples])
    return out


def rss_flat(series: list[float]) -> dict[str, Any]:
    """Flat: the second half's highest RSS is within 5 % (at least 2 MB) of the first half's highest."""
    if len(series) < 4:
        return {"flat": None, "detail": "too few samples"}
    half = len(series) // 2
    first, second = max(series[:half]), max(series[half:])
    allowed = max(2.0, 0.05 * first)
    return {"flat": second - first <= allowed, "first_half_max_mb": round(first, 1),
            "second_half_max_mb": round(second, 1), "allowed_growth_mb": round(allowed, 1)}


def final_plan(run: Run, env: dict[str, str], say: Any) -> None:
    code, out, err = run_cli(["plan"], env)
    report = next((json.loads(line) for line in out.splitlines() if '"reconcile.report"' in line), {})
    counts = report.get("counts") or {}
    todo = {k: counts.get(k) for k in ("created", "updated", "archived")}
    run.result["final_plan"] = {"exit_code": code, **todo, "orphans": counts.get("orphans")}
    if code != 0 or any(v != 0 for v in todo.values()):
        run.failures.append(f"final plan not empty: exit {code}, {todo} {err.strip()[-200:]}")
    say(f"  plan after the load: {todo}, exit {code}")


# -- the benchmark -------------------------------------------------------------------------------

def run_benchmark(args: argparse.Namespace, say: Any) -> dict[str, Any]:
    tag = f"rcev_{uuid.uuid4().hex[:8]}"
    with server(args, say) as (admin, log_path, kind):
        version = int(_autocommit(admin, "SHOW server_version_num")[0])
        text = str(_autocommit(admin, "SHOW server_version")[0]).split()[0]
        bench = Bench(args, admin, tag, version, {"kind": kind, "version": text}, log_path)
        try:
            templates = prepare(bench, say)
            runs = [one_run(bench, templates, source, rate, args.soak or args.seconds, say)
                    for source, rate in plan_of(args)]
        finally:
            drop(bench, list(bench.databases))
            _autocommit(admin, f"DROP ROLE IF EXISTS {tag}")
    return summarize(args, bench, runs)


def plan_of(args: argparse.Namespace) -> list[tuple[str, int]]:
    if args.soak is not None:
        return [(args.sources[0], args.rates[0])]
    return [(source, rate) for source in args.sources for rate in args.rates]


def targets_of(args: argparse.Namespace, run: Run) -> dict[str, Any]:
    r = run.result
    targets: dict[str, Any] = {"lost==0": {"value": r.get("lost"), "limit": 0, "met": r.get("lost") == 0}}
    p99 = (r.get("lag_ms") or {}).get("p99")
    limit = P99_TARGET_MS.get(run.rate) if run.source != "poll" else args.poll_interval * 1000 + 1000
    if limit is not None:
        targets[f"p99_ms<={limit:g}"] = {"value": p99, "limit": limit, "met": p99 is not None and p99 <= limit}
    cpu = (r.get("listener") or {}).get("cpu_share")
    if run.rate == 100:
        targets["cpu_share<0.5"] = {"value": cpu, "limit": CPU_TARGET, "met": cpu is not None and cpu < CPU_TARGET}
    flat = ((r.get("listener") or {}).get("rss_flat") or {}).get("flat")
    if args.soak is not None:
        targets["rss_flat"] = {"value": flat, "met": flat is True}
    return targets


def summarize(args: argparse.Namespace, bench: Bench, runs: list[Run]) -> dict[str, Any]:
    out = []
    for run in runs:
        out.append({"source": run.source, "rate": run.rate, "seconds": run.seconds, **run.result,
                    "targets": targets_of(args, run), "failures": run.failures, "ok": not run.failures})
    return {
        "benchmark": "tenant-reconcile events",
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python -m benchmarks.events " + shlex.join(args.argv),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "server": bench.server, "tenants": args.tenants, "poll_interval_s": args.poll_interval,
        "mix": {"update": 0.88, "insert": 0.10, "archive": 0.02}, "soak_s": args.soak,
        "statements_counted": bench.stats, "runs": out, "ok": all(r["ok"] for r in out),
    }


# -- output --------------------------------------------------------------------------------------

COLUMNS = ("source", "rate/s", "sent", "achieved/s", "lost", "p50 ms", "p95 ms", "p99 ms", "max ms", "batches",
           "stmts/chg mkt", "stmts/chg prod", "tx/chg mkt", "cpu core", "rss MB start/end/peak", "stop", "plan")


def row_of(r: dict[str, Any]) -> list[str]:
    lag, st, li = r.get("lag_ms") or {}, r.get("statements") or {}, r.get("listener") or {}
    rss = li.get("rss_mb") or {}
    mk, pr = st.get("marketplace") or {}, st.get("product") or {}
    plan = r.get("final_plan") or {}
    empty = plan and all(plan.get(k) == 0 for k in ("created", "updated", "archived"))
    return [r["source"], str(r["rate"]), str(r.get("sent", "-")), str(r.get("achieved_rate", "-")),
            str(r.get("lost", "-")), *(str(lag.get(k, "-")) for k in ("p50", "p95", "p99", "max")),
            str(st.get("batches", "-")), str(mk.get("per_change", "-")), str(pr.get("per_change", "-")),
            str(mk.get("transactions_per_change", "-")), str(li.get("cpu_share", "-")),
            f"{rss.get('start', '-')}/{rss.get('end', '-')}/{rss.get('peak', '-')}",
            str((r.get("stop") or {}).get("exit_code", "-")), "empty" if empty else "NOT EMPTY"]


def render(s: dict[str, Any]) -> str:
    rows = [list(COLUMNS)] + [row_of(r) for r in s["runs"]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [f"tenant-reconcile events: {s['tenants']:,} tenants, server {s['server']['kind']} "
             f"PostgreSQL {s['server']['version']}, poll interval {s['poll_interval_s']:g}s, {s['date']}"]
    lines += ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    for r in s["runs"]:
        unmet = [k for k, t in r["targets"].items() if not t["met"]]
        verdict = "all met" if not unmet else "NOT met: " + ", ".join(unmet)
        lines.append(f"{r['source']} {r['rate']}/s: targets {verdict}"
                     + (f"; FAILED: {'; '.join(r['failures'])}" if r["failures"] else ""))
        if r.get("load_kept_up") is False:
            lines.append(f"  the load generator fell behind: {r.get('achieved_rate')} changes/s committed of "
                         f"{r['rate']} asked (the machine was too busy); this run measured less load")
        soak = (r.get("listener") or {}).get("rss_flat")
        if soak:
            lines.append(f"  soak RSS: {soak}")
    lines.append(f"command: {s['command']}")
    return "\n".join(lines)


def _csv(kind: type, text: str) -> list[Any]:
    return [kind(x.strip()) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.events", description=__doc__.split("\n")[0])
    p.add_argument("--sources", default="pg,redis,poll", help="comma-separated: pg, redis, poll")
    p.add_argument("--rates", default="10,100,1000", help="changes per second, comma-separated")
    p.add_argument("--seconds", type=float, default=60.0, help="load duration of each run (default 60)")
    p.add_argument("--tenants", type=int, default=100_000, help="product tenants (default 100000)")
    p.add_argument("--poll-interval", type=float, default=5.0, help="the poll source's interval (default 5)")
    p.add_argument("--drain-timeout", type=float, default=30.0,
                   help="after the load, how long a change may take before it counts as lost (plus the poll "
                        "interval; default 30)")
    p.add_argument("--soak", type=float, default=None, metavar="SECONDS",
                   help="one source (the first of --sources) at one rate (the first of --rates) for SECONDS, "
                        "the listener's RSS sampled every 10 s")
    p.add_argument("--workers", type=int, default=8, help="product connections of the load generator (default 8)")
    p.add_argument("--url", metavar="ADMIN_URL", help="an existing server (rcev_* databases and a role are created "
                   "and dropped); default: a private server with pg_stat_statements")
    p.add_argument("--pg-bin", metavar="DIR", help="initdb/pg_ctl of the private server (default: pg_config's)")
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--random-state", type=int, default=1, help="picks which tenants change and how")
    p.add_argument("--json-only", action="store_true", help="print only the JSON line")
    args = p.parse_args(argv)
    args.sources, args.rates = _csv(str, args.sources), _csv(int, args.rates)
    if not args.sources or set(args.sources) - set(SOURCES):
        p.error(f"--sources: one or more of {', '.join(SOURCES)}")
    if not args.rates or min(args.rates) <= 0 or args.seconds <= 0 or args.tenants < 10:
        p.error("--rates and --seconds must be positive, --tenants at least 10")
    args.argv = argv
    return args


def main(argv: list[str] | None = None) -> int:
    summary = run_and_print(parse_args(sys.argv[1:] if argv is None else argv), run_benchmark, render,
                            database_error_exit=2)
    if isinstance(summary, int):
        return summary
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
