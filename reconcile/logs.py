"""structlog set-up: JSON lines on stdout (orjson), or a console rendering, or ECS field names.

Context such as `run_id` is bound once on the logger; rendering happens only at the edge.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import IO, Any

import orjson
import structlog

ECS_VERSION = "8.11.0"

_FAILURE_EVENTS = {"tenant.error", "tenant.conflict"}
_FAILURE_STATUSES = {"failed", "aborted", "locked", "partial"}


def utc_timestamp() -> str:
    """Now as in every event: ISO 8601, UTC, milliseconds, `Z`."""
    now = time.time()
    stamp = datetime.fromtimestamp(now, UTC)
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.{int(now * 1000) % 1000:03d}Z"


def _timestamp(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event_dict["timestamp"] = utc_timestamp()
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
    out.update(event_dict)
    return out


def _orjson_dumps(obj: Any, **_: Any) -> bytes:
    return orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS)


def configure_logging(fmt: str = "json", stream: IO[str] | None = None, level: int = logging.INFO) -> None:
    """Route structlog (and stdlib warnings from libraries) to `stream`, default stdout."""
    stream = stream if stream is not None else sys.stdout
    shared: list[Any] = [structlog.contextvars.merge_contextvars, structlog.processors.add_log_level,
                         _timestamp]
    if fmt == "console":
        renderer: Any = structlog.dev.ConsoleRenderer(colors=stream.isatty(), sort_keys=False)
        factory: Any = structlog.PrintLoggerFactory(file=stream)
        processors = [*shared, structlog.processors.format_exc_info, renderer]
    else:
        last = _to_ecs if fmt == "ecs" else _head_first
        buffer = getattr(stream, "buffer", None)
        if buffer is not None:
            factory = structlog.BytesLoggerFactory(file=buffer)
            renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        else:  # a text-only stream (tests capturing into StringIO)
            factory = structlog.PrintLoggerFactory(file=stream)
            renderer = structlog.processors.JSONRenderer(
                serializer=lambda obj, **kw: _orjson_dumps(obj).decode())
        processors = [*shared, structlog.processors.dict_tracebacks, last, renderer]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    _route_stdlib(stream, fmt)


def _route_stdlib(stream: IO[str], fmt: str) -> None:
    """Libraries log through stdlib logging; render their warnings as the same JSON lines."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_tenant_reconcile", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream)
    handler._tenant_reconcile = True  # type: ignore[attr-defined]
    if fmt == "console":
        final: Any = structlog.dev.ConsoleRenderer(colors=False)
    else:
        final = structlog.processors.JSONRenderer(serializer=lambda obj, **kw: _orjson_dumps(obj).decode())
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    *([_to_ecs] if fmt == "ecs" else [_head_first] if fmt == "json" else []), final],
        foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name, _timestamp],
    ))
    root.addHandler(handler)
    root.setLevel(logging.WARNING)


def get_logger(**context: Any) -> Any:
    return structlog.get_logger().bind(**context)
