"""`schedule --metrics-port`: a real `schedule` process against real databases, scraped over real
HTTP. What a run, a tripped guard and an event leave in /metrics, what /healthz answers while the
scheduler runs and once it stops, and how a port that cannot be opened or a bad setting ends (exit 2,
one line, no secret)."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from reconcile.actions import COUNT_KEYS
from reconcile.report.model import STATUS_EXIT_CODES
from tests.faults.harness import Proc, direct_url, run, secret_fragments
from tests.listening import listen, stop, wait_for_report, wait_until, with_trigger
from tests.pgtools import Databases
from tests.test_operations import SLOW_INSERT

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
STOPS_WITHIN_S = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)


def scrape(port: int) -> tuple[set[str], Samples]:
    """The family names and every sample of /metrics, parsed by prometheus-client's own parser."""
    response = get(port, "/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    families = list(text_string_to_metric_families(response.text))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}
    return {f.name for f in families}, samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def scrape_until(port: int, proc: Proc, what: str, ready: Callable[[Samples], bool]) -> tuple[set[str], Samples]:
    """Scrape until `ready` holds: a run is recorded just after its report is logged."""
    found: list[tuple[set[str], Samples]] = []

    def attempt() -> bool:
        try:
            found[:] = [scrape(port)]
        except httpx.TransportError:
            return False
        return ready(found[0][1])

    wait_until(what, attempt, proc)
    return found[0]


def schedule(dbs: Databases, port: int, *args: str, **env: str) -> Proc:
    """`schedule` with one run right away and none after it for an hour."""
    return Proc("schedule", "--interval-seconds", "3600", "--run-now", "--metrics-port", str(port),
                "--metrics-host", "127.0.0.1", *args, env=dbs.env(**env))


def port_is_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def stops_cleanly(proc: Proc, port: int) -> None:
    proc.signal(signal.SIGTERM)
    outcome = proc.finish(deadline=STOPS_WITHIN_S)
    assert outcome.code == 0, outcome.tail()
    assert "Traceback" not in outcome.stderr
    assert port_is_closed(port), "the metrics server outlived the process's stop"


# -- a run -----------------------------------------------------------------------------------------

def test_after_a_run_metrics_count_one_success_its_status_duration_and_the_reports_actions(dbs):
    dbs.add_product(("a", "A", "pro", "active"), ("b", "B", "dev", "trial"), ("c", "C", "starter", "active"))
    dbs.add_market(("b", "B", "PRO", "TRIAL"), ("c", "C", "STARTER", "ACTIVE"), ("z", "Z", "DEV", "ACTIVE"))
    port = free_port()
    before = time.time()
    proc = schedule(dbs, port)
    try:
        [report] = wait_for_report(proc, "schedule")
        families, samples = scrape_until(port, proc, "the run in /metrics", lambda s: value(
            s, "tenant_reconcile_runs_total", status="success", trigger="schedule") == 1)
        assert report["status"] == "success"
        assert {"tenant_reconcile_runs", "tenant_reconcile_actions", "tenant_reconcile_run_duration_seconds",
                "tenant_reconcile_last_run_timestamp_seconds", "tenant_reconcile_last_run_status",
                "tenant_reconcile_last_success_timestamp_seconds",
                "tenant_reconcile_scheduler_start_time_seconds"} <= families
        assert not any(name.startswith("tenant_reconcile_event") for name in families), "no --listen, no events"
        for status in STATUS_EXIT_CODES:  # every status is there from the start, at 0 until it happens
            assert value(samples, "tenant_reconcile_runs_total", status=status, trigger="schedule") == (
                1 if status == "success" else 0), status
            assert value(samples, "tenant_reconcile_last_run_status", scope="full", status=status) == (
                1 if status == "success" else 0), status
        assert report["counts"]["created"] == report["counts"]["updated"] == report["counts"]["orphans"] == 1
        for key in COUNT_KEYS:
            assert value(samples, "tenant_reconcile_actions_total", action=key) == report["counts"][key], key
        ended = value(samples, "tenant_reconcile_last_run_timestamp_seconds", scope="full")
        assert ended is not None and before <= ended <= time.time()
        assert value(samples, "tenant_reconcile_last_success_timestamp_seconds", scope="full") == ended
        assert value(samples, "tenant_reconcile_run_duration_seconds_count", scope="full") == 1
        duration = value(samples, "tenant_reconcile_run_duration_seconds_sum", scope="full")
        assert duration == pytest.approx(report["timings_ms"]["total"] / 1000, abs=0.01)
        started = value(samples, "tenant_reconcile_scheduler_start_time_seconds")
        assert started is not None and before - 1 <= started <= ended
    finally:
        proc.kill_if_running()
    assert dbs.market()["a"]["plan"] == "PRO"


def test_a_tripped_guard_shows_as_status_aborted_with_no_success_and_no_actions(dbs):
    dbs.add_market(("a", "A", "DEV", "ACTIVE"))  # an empty product snapshot: the guard aborts
    port = free_port()
    proc = schedule(dbs, port)
    try:
        [report] = wait_for_report(proc, "schedule")
        _, samples = scrape_until(port, proc, "the aborted run in /metrics", lambda s: value(
            s, "tenant_reconcile_runs_total", status="aborted", trigger="schedule") == 1)
        assert report["status"] == "aborted"
        assert value(samples, "tenant_reconcile_last_run_status", scope="full", status="aborted") == 1
        assert value(samples, "tenant_reconcile_last_run_status", scope="full", status="success") == 0
        assert value(samples, "tenant_reconcile_last_run_timestamp_seconds", scope="full") is not None
        assert value(samples, "tenant_reconcile_last_success_timestamp_seconds", scope="full") is None
        assert all(value(samples, "tenant_reconcile_actions_total", action=key) == 0 for key in COUNT_KEYS)
    finally:
        proc.kill_if_running()


# -- /healthz and the stop -------------------------------------------------------------------------

def test_healthz_is_200_while_the_scheduler_runs_then_503_during_the_stop_and_the_server_ends_with_it(dbs):
    dbs.add_product(("a", "A", "pro", "active"))
    dbs.sql("marketplace", SLOW_INSERT.format(seconds=3))
    port = free_port()
    proc = schedule(dbs, port, "--stop-grace", "20")
    try:
        def healthz() -> int:
            try:
                return get(port, "/healthz").status_code
            except httpx.TransportError:
                return 0

        wait_until("/healthz 200", lambda: healthz() == 200, proc)
        assert get(port, "/metrics").status_code == 200
        assert get(port, "/nothing-here").status_code == 404
        proc.wait_for("lock.acquired")  # the run is under way (its INSERT sleeps 3 s)
        proc.signal(signal.SIGTERM)
        wait_until("/healthz 503 while the run in progress finishes", lambda: healthz() == 503, proc, timeout=5)
        outcome = proc.finish(deadline=STOPS_WITHIN_S + 3)
    finally:
        proc.kill_if_running()
    assert outcome.code == 0, outcome.tail()
    assert outcome.reports[0]["status"] == "success"  # the grace period let it finish
    assert port_is_closed(port)


# -- events --------------------------------------------------------------------------------------

@pytest.mark.parametrize("source", ["pg", "poll"])
def test_with_listen_an_event_is_counted_by_source_and_its_batch_and_lag_are_observed(dbs, source):
    if source == "pg":
        with_trigger(dbs)
    port = free_port()
    proc = listen(dbs, source, "--metrics-port", str(port), "--metrics-host", "127.0.0.1")
    try:
        _, samples = scrape_until(port, proc, "the startup run in /metrics", lambda s: value(
            s, "tenant_reconcile_runs_total", status="success", trigger="startup") == 1)
        assert value(samples, "tenant_reconcile_events_total", source=source) == 0
        assert value(samples, "tenant_reconcile_event_lag_seconds_count", source=source) == 0
        dbs.add_product(("kbz-new", "New", "pro", "active"))
        wait_for_report(proc, "event")
        _, samples = scrape_until(port, proc, "the event's lag in /metrics", lambda s: (value(
            s, "tenant_reconcile_event_lag_seconds_count", source=source) or 0) >= 1)
        assert (value(samples, "tenant_reconcile_events_total", source=source) or 0) >= 1
        lag = value(samples, "tenant_reconcile_event_lag_seconds_sum", source=source)
        assert lag is not None and 0 < lag < 20
        assert (value(samples, "tenant_reconcile_event_batch_size_count") or 0) >= 1
        assert (value(samples, "tenant_reconcile_event_batch_size_sum") or 0) >= 1
        assert (value(samples, "tenant_reconcile_runs_total", status="success", trigger="event") or 0) >= 1
        assert value(samples, "tenant_reconcile_last_run_status", scope="event", status="success") == 1
        assert value(samples, "tenant_reconcile_actions_total", action="created") == 1
        assert value(samples, "tenant_reconcile_last_success_timestamp_seconds", scope="full") is not None
        outcome = stop(proc)
    finally:
        proc.kill_if_running()
    assert outcome.code == 0, outcome.tail()
    assert port_is_closed(port)


# -- what cannot start ---------------------------------------------------------------------------

def test_a_metrics_port_in_use_is_exit_2_in_one_line_naming_the_port_with_no_secret_and_no_run(dbs):
    dbs.add_product(("a", "A", "pro", "active"))
    env = dbs.env(PRODUCT_DATABASE_URL=direct_url(dbs.product), MARKETPLACE_DATABASE_URL=direct_url(dbs.marketplace))
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        out = run("schedule", "--run-now", "--metrics-port", str(port), env=env, deadline=30)
    assert out.code == 2, out.tail()
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and f"metrics port {port}" in lines[0] and "in use" in lines[0], lines
    assert not any(fragment in out.stdout + out.stderr for fragment in secret_fragments())
    assert out.reports == [] and dbs.market() == {}


@pytest.mark.parametrize(("args", "env", "config", "fragment"), [
    (("--metrics-port", "70000"), {}, None, "--metrics-port must be a TCP port between 1 and 65535, got 70000"),
    (("--metrics-port", "nine"), {}, None, "--metrics-port must be an integer, got 'nine'"),
    ((), {"RECONCILE_METRICS_PORT": "0"}, None, "RECONCILE_METRICS_PORT must be a TCP port between 1 and 65535"),
    ((), {}, "[metrics]\nport = \"9100x\"\n", "metrics.port must be an integer"),
    (("--metrics-port", "9464", "--metrics-host", "http://admin:Sec-Mx7q@monitor"), {}, None,
     "--metrics-host must be an IP address or a host name to listen on"),
    ((), {"RECONCILE_METRICS_HOST": "Sec-Mx7q@0.0.0.0"}, None, "RECONCILE_METRICS_HOST must be an IP address"),
])
def test_a_bad_metrics_setting_is_exit_2_in_one_line_naming_it(dbs, tmp_path, args, env, config, fragment):
    extra: dict[str, Any] = dict(env)
    if config is not None:
        path = tmp_path / "reconcile.toml"
        path.write_text(config)
        extra["RECONCILE_CONFIG"] = str(path)
    out = run("schedule", *args, env=dbs.env(**extra), deadline=30)
    assert out.code == 2, out.tail()
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], lines
    assert "Sec-Mx7q" not in out.stdout + out.stderr and out.stdout == ""
