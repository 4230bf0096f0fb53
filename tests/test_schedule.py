"""`tenant-reconcile schedule`: stopping at any moment of start-up, crons that never fire, and the
standard crontab rule for day-of-month + day-of-week. Processes are the real CLI against a real
database; triggers are APScheduler's own, asked for their real next fire times."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from jobs.scheduler import parse_cron
from reconcile.errors import ConfigError
from tests.pgtools import REPO, run_cli
from tests.test_operations import Proc

ITERATIONS = 3
EXIT_WITHIN_S = 5.0
IDLE_CRON = "0 2 * * 0"  # never due while a test runs (unless it is Sunday 02:00 UTC)


# -- helpers --------------------------------------------------------------------------------------

def spawn(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "jobs", "schedule", "--cron", IDLE_CRON, *args], env=env,
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_first_stdout_byte(proc: subprocess.Popen[bytes], timeout: float = 30) -> bytes:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "no stdout from the scheduler"
    return os.read(proc.stdout.fileno(), 1)


def sigterm_is_caught(pid: int) -> bool:
    """Whether the process has installed a SIGTERM handler (Linux /proc: the SigCgt bitmask)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


def finish(proc: subprocess.Popen[bytes], timeout: float = EXIT_WITHIN_S) -> tuple[int, str, str]:
    """Exit code, stdout, stderr; the process is killed (and the test fails) if it does not exit."""
    started = time.monotonic()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"still running {timeout}s after the signal (hung); stdout={out!r} stderr={err!r}")
    assert time.monotonic() - started < timeout
    return proc.returncode, out.decode(), err.decode()


def assert_clean_stop(code: int, out: str, err: str, reason: str) -> None:
    assert code == 0, (code, out, err)
    assert "Traceback" not in err and "Error" not in err, err
    assert f'"reason":"{reason}"' in out.replace(" ", ""), out  # schedule.stopped names the signal


def fire_times(trigger: object, now: datetime, count: int) -> list[datetime]:
    times: list[datetime] = []
    previous = None
    for _ in range(count):
        fire = trigger.get_next_fire_time(previous, previous or now)  # type: ignore[attr-defined]
        assert fire is not None
        times.append(fire)
        previous = fire
    return times


def cron_weekday(day: date) -> int:
    """Standard crontab numbering: 0 = Sunday, 1 = Monday ... 6 = Saturday."""
    return (day.weekday() + 1) % 7


def expected_at_0200(now: datetime, count: int, matches: Callable[[date], bool]) -> list[datetime]:
    """The oracle: every day at 02:00 in now's time zone that `matches`, strictly after now."""
    found: list[datetime] = []
    day = now.date()
    while len(found) < count:
        fire = datetime(day.year, day.month, day.day, 2, 0, tzinfo=now.tzinfo)
        if fire > now and matches(day):
            found.append(fire)
        day += timedelta(days=1)
    return found


# -- 1. SIGTERM/SIGINT at any moment of start-up: exit 0, promptly, no traceback -------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_at_the_first_stdout_byte_stops_cleanly_with_exit_0(dbs, sig):
    """The signal lands while `schedule.started` is being written, or just before the scheduler
    starts: formerly a hang (the handler logged under structlog's lock) or exit 1
    (SchedulerNotRunningError)."""
    for _ in range(ITERATIONS):
        proc = spawn(dbs.env())
        wait_first_stdout_byte(proc)
        proc.send_signal(sig)
        assert_clean_stop(*finish(proc), reason=signal.Signals(sig).name)


def test_sigterm_as_soon_as_the_handler_is_installed_stops_cleanly_with_exit_0(dbs):
    """The earliest moment the process can handle SIGTERM: before `schedule.started`, before the
    scheduler runs."""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc to see when the handler is installed")
    for _ in range(ITERATIONS):
        proc = spawn(dbs.env())
        deadline = time.monotonic() + 30
        while not sigterm_is_caught(proc.pid):
            assert proc.poll() is None and time.monotonic() < deadline, "SIGTERM handler never installed"
        proc.send_signal(signal.SIGTERM)
        assert_clean_stop(*finish(proc), reason="SIGTERM")


# -- 2. a cron that never fires: exit 2 at start-up ----------------------------------------------

@pytest.mark.parametrize("cron", ["0 2 31 2 *", "0 2 30 2 *", "15 4 31 4,6,9,11 *"])
def test_a_cron_that_never_fires_exits_2_at_startup_naming_it(dbs, cron):
    result = run_cli("schedule", "--cron", cron, env=dbs.env(), timeout=30)
    assert result.code == 2, result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and repr(cron) in lines[0] and "never fires" in lines[0], result.stderr


def test_a_cron_that_never_fires_is_a_config_error():
    with pytest.raises(ConfigError, match="never fires"):
        parse_cron("0 2 31 2 *", ZoneInfo("UTC"))


def test_february_29th_is_not_mistaken_for_never():
    now = datetime(2025, 1, 1, tzinfo=ZoneInfo("UTC"))
    assert fire_times(parse_cron("0 2 29 2 *", ZoneInfo("UTC")), now, 2) == [
        datetime(2028, 2, 29, 2, tzinfo=ZoneInfo("UTC")), datetime(2032, 2, 29, 2, tzinfo=ZoneInfo("UTC"))]


# -- 3. day-of-month and day-of-week both restricted: fires when EITHER matches -------------------

UTC = ZoneInfo("UTC")
JAN_1_2025 = datetime(2025, 1, 1, tzinfo=UTC)  # a Wednesday


@pytest.mark.parametrize(("cron", "matches"), [
    ("0 2 13 * 5", lambda d: d.day == 13 or cron_weekday(d) == 5),    # every 13th and every Friday
    ("0 2 13 * fri", lambda d: d.day == 13 or cron_weekday(d) == 5),  # names too
    ("0 2 1 * 1", lambda d: d.day == 1 or cron_weekday(d) == 1),      # every 1st and every Monday
    ("0 2 1,15 * 0", lambda d: d.day in (1, 15) or cron_weekday(d) == 0),
    ("0 2 13 * 7", lambda d: d.day == 13 or cron_weekday(d) == 0),    # 7 is Sunday as well
    ("0 2 1-3 * 6-7", lambda d: d.day <= 3 or cron_weekday(d) in (6, 0)),
])
def test_day_of_month_and_day_of_week_both_restricted_fire_when_either_matches(cron, matches):
    assert fire_times(parse_cron(cron, UTC), JAN_1_2025, 40) == expected_at_0200(JAN_1_2025, 40, matches)


@pytest.mark.parametrize(("cron", "matches"), [
    ("0 2 * * 0", lambda d: cron_weekday(d) == 0),  # only Sundays
    ("0 2 13 * *", lambda d: d.day == 13),          # only the 13th
    ("0 2 * * 1-5", lambda d: 1 <= cron_weekday(d) <= 5),
    # a field starting with `*` counts as unrestricted, as in Vixie cron and cronie: both must match
    ("0 2 */2 * 1", lambda d: d.day % 2 == 1 and cron_weekday(d) == 1),
])
def test_only_one_day_field_restricted_is_unchanged(cron, matches):
    assert fire_times(parse_cron(cron, UTC), JAN_1_2025, 20) == expected_at_0200(JAN_1_2025, 20, matches)


def test_either_day_rule_is_limited_by_the_month_field():
    # 0 2 13 2 5: the 13th of February, and the Fridays of February
    times = fire_times(parse_cron("0 2 13 2 5", UTC), JAN_1_2025, 6)
    assert times == expected_at_0200(JAN_1_2025, 6, lambda d: d.month == 2 and (d.day == 13 or cron_weekday(d) == 5))


def test_either_day_rule_honours_the_time_zone():
    paris = ZoneInfo("Europe/Paris")
    now = datetime(2025, 1, 1, tzinfo=paris)
    times = fire_times(parse_cron("0 2 13 * 5", paris), now, 6)
    assert times == expected_at_0200(now, 6, lambda d: d.day == 13 or cron_weekday(d) == 5)
    assert [t.isoformat() for t in times[:3]] == [
        "2025-01-03T02:00:00+01:00", "2025-01-10T02:00:00+01:00", "2025-01-13T02:00:00+01:00"]


def test_a_never_matching_day_of_month_still_fires_on_the_day_of_week():
    # Feb 31 never exists, but with a restricted day of week the OR rule still fires on Fridays.
    times = fire_times(parse_cron("0 2 31 2 5", UTC), JAN_1_2025, 4)
    assert times == expected_at_0200(JAN_1_2025, 4, lambda d: d.month == 2 and cron_weekday(d) == 5)


def test_started_and_next_events_report_the_either_rule_in_a_real_process(dbs):
    tokyo = ZoneInfo("Asia/Tokyo")  # no DST; +09:00 shows the time zone is honoured
    rule = lambda d: d.day == 13 or cron_weekday(d) == 5  # noqa: E731
    before = expected_at_0200(datetime.now(tokyo), 1, rule)[0]
    proc = Proc(["schedule", "--run-now", "--cron", "0 2 13 * 5", "--timezone", "Asia/Tokyo"], dbs.env())
    started = proc.wait_for("schedule.started")[0]
    nxt = proc.wait_for("schedule.next")[0]  # logged after the --run-now run, from the job's trigger
    after = expected_at_0200(datetime.now(tokyo), 1, rule)[0]
    proc.signal(signal.SIGTERM)
    assert proc.finish() == 0
    assert started["trigger"].startswith("or[")
    for event in (started, nxt):
        fire = datetime.fromisoformat(event["next_run"])
        assert fire in (before, after) and fire.utcoffset() == timedelta(hours=9), event
    assert proc.of("reconcile.report")[0]["status"] == "success"
