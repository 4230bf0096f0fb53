"""`show FILE`: a saved plan rendered for people (what `run --plan FILE` would apply)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from reconcile.errors import ConfigError
from reconcile.pipeline.planfile import FORMAT


def read_plan_document(path: str) -> dict[str, Any]:
    try:
        document = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError:
        raise ConfigError(f"{path} is not JSON (expected a file written by plan --out)") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a saved plan (expected a file written by plan --out)")
    return document


def _quote(value: Any) -> str:
    return "(null)" if value is None else str(value)


def action_line(action: dict[str, Any], width: int) -> str:
    """One action as the console rendering of a run shows it."""
    tenant = action["id"].ljust(width)
    write, read = action["write"], action.get("read") or {}
    if action["action"] == "create":
        return f"+ create {tenant}  \"{write['name']}\"  {write['plan']}/{write['status']}"
    if action["action"] == "update":
        changes = [f"{name} {_quote(read.get(name))} -> {_quote(write[name])}"
                   for name in ("name", "plan", "status") if read.get(name) != write[name]]
        return f"~ update {tenant}  {', '.join(changes)}"
    return f"- archive {tenant}{'  (orphan)' if action.get('orphan') else ''}"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def summary_line(counts: dict[str, int], orphans_archived: bool = False) -> str:
    return (f"Plan: {counts.get('created', 0)} to create, {counts.get('updated', 0)} to update, "
            f"{counts.get('archived', 0)} to archive. {_plural(counts.get('orphans', 0), 'orphan')} "
            f"({'archived' if orphans_archived else 'reported'}), {_plural(counts.get('errors', 0), 'row error')}, "
            f"{counts.get('skipped', 0)} skipped.")


def render_plan(document: dict[str, Any], now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    made = datetime.fromisoformat(document["created_at"].replace("Z", "+00:00"))
    age_h = (now - made).total_seconds() / 3600
    lines = [f"Saved plan {document['run_id']}, made {document['created_at']} ({age_h:.1f} h ago)",
             f"  product      {document['product']['db']} ({document['product']['tenants']} tenants)",
             f"  marketplace  {document['marketplace']['db']} ({document['marketplace']['tenants']} tenants)",
             f"  shard {document['shard']}"
             + (f", only {len(document['only'])} tenants" if document.get("only") is not None else "")
             + f", mapping {document['mapping'][:19]}…", ""]
    actions = document["actions"]
    width = max([16, *(len(a["id"]) for a in actions)])
    lines += [action_line(action, width) for action in actions]
    if actions:
        lines.append("")
    for error in document.get("errors", []):
        lines.append(f"! error {error['id'].ljust(width)}  {error['error']}: {error['detail']}")
    archived_orphans = any(a.get("orphan") for a in actions)
    lines.append(summary_line(document["counts"], archived_orphans))
    lines.append("Apply exactly this plan with: tenant-reconcile run --plan FILE")
    return "\n".join(lines)
