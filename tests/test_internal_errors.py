"""An unexpected exception is logged as one event with its type, scrubbed message and frames, and
never with local variables (structlog's default exception rendering shows them)."""

from __future__ import annotations

from reconcile.report.logs import get_logger, log_internal_error
from tests.pgtools import EventLog

ROW_VALUE = "row-value-4f7c1d"
PASSWORD = "Zq9-secret-77"


def failing(name: str) -> None:
    secret_local = f"postgresql://u:{PASSWORD}@h/db"  # noqa: F841 - the local that must not be logged
    raise KeyError(f"no such tenant {name} at postgresql://u:{PASSWORD}@h/db")


def test_internal_error_event_has_type_message_and_frames_but_no_locals():
    events = EventLog()
    try:
        failing(ROW_VALUE)
    except KeyError as exc:
        log_internal_error(get_logger(run_id="t"), exc)
    [event] = events.of("reconcile.internal_error")
    assert event["exception"] == "KeyError"
    assert ROW_VALUE in event["message"] and PASSWORD not in event["message"]
    assert [f["function"] for f in event["frames"]][-1] == "failing"
    assert all(set(f) == {"file", "line", "function"} for f in event["frames"])
    text = events.stream.getvalue()
    assert PASSWORD not in text and "secret_local" not in text


def test_log_exception_anywhere_renders_the_same_safe_fields():
    events = EventLog()
    try:
        failing(ROW_VALUE)
    except KeyError:
        get_logger().exception("http.internal_error", path="/x")
    [event] = events.of("http.internal_error")
    assert event["exception"] == "KeyError" and event["path"] == "/x"
    text = events.stream.getvalue()
    assert PASSWORD not in text and "secret_local" not in text and "exc_info" not in event
