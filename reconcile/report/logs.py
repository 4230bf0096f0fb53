"""structlog set-up: JSON lines on stdout (orjson), or a rendering for people at a terminal
(reconcile.report.console), or ECS field names.

Context such as `run_id` is bound once on the logger; rendering happens only at the edge.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import IO, Any

import orjson
import structlog

from reconcile.report.model import FOR_PEOPLE

ECS_VERSION = "8.11.0"

_FAILURE_EVENTS = {"tenant.error", "tenant.conflict"}
_FAILURE_STATUSES = {"failed", "aborted", "locked", "partial"}


_this_second: tuple[int, str] = (-1, "")


def utc_timestamp() -> str:
    """Now as in every event: ISO 8601, UTC, milliseconds, `Z`. The date and time of the current
    second are formatted once per second: a run announcing millions of actions stamps each one."""
    global _this_second
    milliseconds = int(time.time() * 1000)
    second, fraction = divmod(milliseconds, 1000)
    cached = _this_second  # read once: another thread may replace it meanwhile
    if cached[0] != second:
        cached = _this_second = (second, f"{datetime.fromtimestamp(second, UTC):%Y-%m-%dT%H:%M:%S}")
    return f"{cached[1]}.{fraction:03d}Z"


def _timestamp(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event_dict["timestamp"] = utc_timestamp()
    return event_dict


def _drop_for_people(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """What only the rendering for people reads never reaches JSON or ECS (reconcile.report.model)."""
    event_dict.pop(FOR_PEOPLE, None)
    return event_dict


def _head_first(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    """event, level, timestamp first: what a human scanning raw lines looks for."""
    head = {"event": event_dict.pop("event", None), "level": event_dict.pop("level", "info"),
            "timestamp": event_dict.pop("timestamp", None)}
    head.update(event_dict)
    return head


def _outcome(event_dict: MutableMapping[str, Any]) -> str:
    status = event_dict.get("status")
    if event_dict.get("event") in _FAILURE_EVENTS or status in _FAILURE_STATUSES:
        return "failure"
    if status == "success" or str(event_dict.get("event", "")).startswith(("tenant.", "inbound.")):
        return "success"
    return "unknown"


def _to_ecs(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    """Elastic Common Schema names as flat dotted keys (Elasticsearch expands them)."""
    event = event_dict.pop("event", None)
    out: dict[str, Any] = {
        "@timestamp": event_dict.pop("timestamp", None),
        "log.level": event_dict.pop("level", "info"),
        "message": event,
        "event.action": event,
        "event.outcome": _outcome({**event_dict, "event": event}),
        "ecs.version": ECS_VERSION,
    }
    timings = event_dict.get("timings_ms")
    if isinstance(timings, dict) and isinstance(timings.get("total"), int | float):
        out["event.duration"] = int(timings["total"] * 1_000_000)
    for key in _OBJECT_FIELDS:
        # One type per field in an index: the report's `source` is an object ({db, tenants}), so a
        # `source` that is text elsewhere (reconcile.start's database, a listener's event source)
        # becomes {"name": ...} instead of a mapping conflict that Elasticsearch would reject.
        if isinstance(event_dict.get(key), str):
            event_dict[key] = {"name": event_dict[key]}
    out.update(event_dict)
    return out


_OBJECT_FIELDS = ("source", "target")


def exception_fields(exc: BaseException) -> dict[str, Any]:
    """An exception as log fields: its type, its message (first line, credentials scrubbed, capped)
    and its frames (file, line, function). Never local variables or SQL parameter values, which
    structlog's default rendering would include."""
    from reconcile.db.urls import scrub_credentials

    text = str(exc).strip()
    message = scrub_credentials(text.splitlines()[0])[:300] if text else ""
    frames = [{"file": f.filename, "line": f.lineno, "function": f.name}
              for f in traceback.extract_tb(exc.__traceback__)]
    return {"exception": type(exc).__name__, "message": message, "frames": frames}


def log_internal_error(log: Any, exc: BaseException, event: str = "reconcile.internal_error",
                       **fields: Any) -> None:
    log.error(event, **fields, **exception_fields(exc))


def _safe_exc_info(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """`log.exception(...)` anywhere (ours or a library's) renders as exception_fields, not a
    traceback with locals."""
    exc_info = event_dict.pop("exc_info", None)
    if exc_info:
        if exc_info is True:
            exc_info = sys.exc_info()
        exc = exc_info if isinstance(exc_info, BaseException) else exc_info[1]
        if isinstance(exc, BaseException):
            event_dict.update(exception_fields(exc))
    return event_dict


class QuietStream:
    """stdout for the JSON lines (and the answers), bytes or text. When stdout cannot be written, the
    output stops and the run goes on, with its own exit code: quietly when the reader went away
    (EPIPE, e.g. `| head`), with one stderr line for any other failure (a full disk: ENOSPC; an I/O
    error) or a stdout closed before the start (`>&-`). fd 1 is then pointed at /dev/null so that
    nothing (not even the interpreter's flush at exit) trips over it again. Every writer of stdout
    shares that state: once one has failed, none writes."""

    _lock = threading.Lock()
    _gone = False

    def __init__(self, binary: bool) -> None:
        self._binary = binary

    def write(self, data: Any) -> int:
        return self._guard(lambda stream: stream.write(data), len(data))

    def isatty(self) -> bool:
        return bool(self._guard(lambda stream: stream.isatty(), False))

    def flush(self) -> None:
        self._guard(lambda stream: stream.flush(), None)

    def _guard(self, action: Any, default: Any) -> Any:
        if QuietStream._gone:
            return default
        stream = sys.stdout
        if stream is None:  # closed before we started: Python has no stdout at all
            self._give_up("stdout is closed")
            return default
        try:
            return action(stream.buffer if self._binary else stream)
        except (BrokenPipeError, ValueError):  # ValueError: the stream was closed under us
            self._give_up(None)
        except OSError as exc:
            self._give_up(None if exc.errno == errno.EPIPE else f"stdout cannot be written ({exc.strerror or exc})")
        return default

    @classmethod
    def _give_up(cls, why: str | None) -> None:
        with cls._lock:
            if cls._gone:
                return
            cls._gone = True
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.close(devnull)
        if why is not None:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                sys.stderr.write(f"tenant-reconcile: {why}; carrying on without it\n")
                sys.stderr.flush()


def stdout_bytes() -> QuietStream:
    """stdout for bytes (the JSON lines, the final answer line of `sync`), safe as QuietStream says."""
    return QuietStream(binary=True)


def stdout_text() -> QuietStream:
    """The same for text writers (console rendering, stdlib logging)."""
    return QuietStream(binary=False)


def _orjson_dumps(obj: Any, **_: Any) -> bytes:
    return orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS)


def configure_logging(fmt: str = "json", stream: IO[str] | None = None, level: int = logging.INFO) -> None:
    """Route structlog (and stdlib warnings from libraries) to `stream`, default stdout."""
    to_stdout = stream is None or stream is sys.stdout
    stream = stdout_text() if to_stdout else stream
    shared: list[Any] = [structlog.contextvars.merge_contextvars, structlog.processors.add_log_level,
                         _timestamp, _safe_exc_info]
    if fmt == "console":
        from reconcile.report.console import ConsoleRenderer, use_colors  # only for people: not at start-up

        renderer: Any = ConsoleRenderer(colors=use_colors(stream))
        factory: Any = structlog.PrintLoggerFactory(file=stream)
        processors = [*shared, renderer]
    else:
        last = _to_ecs if fmt == "ecs" else _head_first
        if to_stdout:
            factory = structlog.BytesLoggerFactory(file=stdout_bytes())
            renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        elif getattr(stream, "buffer", None) is not None:
            factory = structlog.BytesLoggerFactory(file=stream.buffer)  # type: ignore[attr-defined]
            renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        else:  # a text-only stream (tests capturing into StringIO)
            factory = structlog.PrintLoggerFactory(file=stream)
            renderer = structlog.processors.JSONRenderer(
                serializer=lambda obj, **kw: _orjson_dumps(obj).decode())
        processors = [*shared, _drop_for_people, last, renderer]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    _route_stdlib(stream, fmt)


def _route_stdlib(stream: IO[str], fmt: str) -> None:
    """Libraries log through stdlib logging; render their warnings in the same format as our events."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_tenant_reconcile", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream)
    handler._tenant_reconcile = True  # type: ignore[attr-defined]
    if fmt == "console":
        from reconcile.report.console import ConsoleRenderer, use_colors

        final: Any = ConsoleRenderer(colors=use_colors(stream))
    else:
        final = structlog.processors.JSONRenderer(serializer=lambda obj, **kw: _orjson_dumps(obj).decode())
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    *([_to_ecs] if fmt == "ecs" else [_head_first] if fmt == "json" else []), final],
        foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name, _timestamp,
                           _safe_exc_info],
    ))
    root.addHandler(handler)
    root.setLevel(logging.WARNING)


def get_logger(**context: Any) -> Any:
    return structlog.get_logger().bind(**context)
