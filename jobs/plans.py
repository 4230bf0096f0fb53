"""`show FILE`: a saved plan rendered for people (what `run --plan FILE` would apply).

Every action is rendered by the console's one rendering of actions (reconcile.report.console), as
the event it would be announced by once applied; the summary is the console's Plan line. A file is
checked before it is rendered: anything missing or of the wrong shape is one line naming the file
and what is wrong (exit 2).
"""

from __future__ import annotations

import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from reconcile.actions import ARCHIVE, BY_NAME, CREATE, ERROR, UPDATE
from reconcile.errors import ConfigError
from reconcile.pipeline.planfile import FORMAT, created_at, document_problem
from reconcile.report.console import PLAN, IdColumn, action_sentence, plain, plan_line

_FIELDS = ("name", "plan", "status")


def read_plan_document(path: str) -> dict[str, Any]:
    """The saved plan at `path`, checked to hold what `show` renders (ConfigError: exit 2)."""
    try:
        document = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError:
        raise ConfigError(f"{path} is not JSON (expected a file written by plan --out)") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a saved plan (expected a file written by plan --out)")
    problem = document_problem(document)
    if problem:
        raise ConfigError(f"{path} is not a complete saved plan: {problem}")
    return document


def _as_event(action: dict[str, Any]) -> dict[str, Any]:
    """A planned action as the event that would announce it once applied."""
    kind = BY_NAME[action["action"]]
    write, read = action["write"], action.get("read") or {}
    if kind is CREATE:
        fields: dict[str, Any] = {name: write.get(name) for name in _FIELDS}
    elif kind is UPDATE:
        fields = {"changes": {name: [read.get(name), write.get(name)] for name in _FIELDS
                              if read.get(name) != write.get(name)}}
    else:
        fields = {"orphan": action.get("orphan") is True}
    return {"event": kind.event, "tenant_id": action.get("id"), **fields}


def _row_error(error: dict[str, Any]) -> dict[str, Any]:
    return {"event": ERROR.event, "tenant_id": error.get("id"), "error": error.get("error"),
            "detail": error.get("detail")}


def _tenants(side: dict[str, Any]) -> str:
    count = side.get("tenants")
    return f"{count} tenant" if count == 1 else f"{plain(count)} tenants"


def render_plan(document: dict[str, Any], now: datetime | None = None, path: str = "FILE") -> str:
    """A document `read_plan_document` accepted (read from `path`), for people."""
    now = now or datetime.now(UTC)
    age_h = (now - created_at(document)).total_seconds() / 3600
    product, market = document["product"], document["marketplace"]
    only = document.get("only")
    lines = [f"Saved plan {plain(document.get('run_id'))}, made {document['created_at']} ({age_h:.1f} h ago)",
             f"  product      {plain(product.get('db'))} ({_tenants(product)})",
             f"  marketplace  {plain(market.get('db'))} ({_tenants(market)})",
             f"  shard {plain(document.get('shard'))}"
             + (f", only {len(only)} tenants" if isinstance(only, list) else "")
             + f", mapping {plain(str(document.get('mapping'))[:19])}…", ""]
    actions = document["actions"]
    ids = IdColumn()
    ids.fit(*(plain(item.get("id")) for item in [*actions, *document["errors"]]))
    said = [action_sentence(_as_event(action), ids, layout=PLAN) for action in actions]
    lines += [line for line in said if line is not None]
    if actions:
        lines.append("")
    lines += [line for line in (action_sentence(_row_error(error), ids, layout=PLAN)
                                for error in document["errors"]) if line is not None]
    archived = [action.get("id") for action in actions if action["action"] == ARCHIVE.name]
    lines.append(plan_line({"counts": document["counts"], "orphans": document.get("orphans") or [],
                            "archived": archived}))
    lines.append(f"Apply exactly this plan with: tenant-reconcile run --plan {shlex.quote(path)}")
    return "\n".join(lines)
