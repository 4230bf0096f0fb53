"""Saved plans: `plan --out FILE` writes the plan a dry run computed; `run --plan FILE` applies exactly
that plan and nothing else, compare-and-set against the marketplace values the plan read.

The file is JSON: a header (format and version, run id, time, both databases as `host:port/db`,
the shard and restriction, a fingerprint of the mapping, the counts) and every action with the
marketplace row's values as read and the values to write. A plan is refused (exit 2) for other
databases, another shard or restriction, another mapping, or when older than the allowed age; a
planned tenant whose product row no longer maps to the planned values is a conflict `stale_plan`.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from reconcile import copytext
from reconcile.actions import ARCHIVE, CREATE, ERROR, ORPHAN, SKIP, UPDATE, WRITES
from reconcile.errors import ConfigError
from reconcile.mapping import ARCHIVED_MARK, Mapping
from reconcile.pipeline.plan import Plan
from reconcile.pipeline.stage import Staged
from reconcile.scope import Scope

FORMAT = "tenant-reconcile plan"
VERSION = 1
_FIELDS = ("name", "plan", "status")


def mapping_fingerprint(mapping: Mapping) -> str:
    """Changes whenever any mapping rule does: a plan is only applied with the mapping that made it."""
    rules = {"plan": mapping.plan, "status": mapping.status, "plan_when_empty": mapping.plan_when_empty,
             "status_when_empty": mapping.status_when_empty}
    canonical = orjson.dumps(rules, option=orjson.OPT_SORT_KEYS)
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


def _values(row: list[bytes], start: int) -> dict[str, str | None]:
    return {name: copytext.value(row[start + i]) for i, name in enumerate(_FIELDS)}


def _actions(plan: Plan, staged: Staged) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for row in plan.spool(CREATE).rows():
        if CREATE.tenant_id(row) not in staged.rejected:
            out.append({"action": CREATE.name, "id": CREATE.tenant_id(row), "read": None,
                        "write": {"slug": copytext.decode(row[1]), **_values(row, 2)}})
    for row in plan.spool(UPDATE).rows():
        out.append({"action": UPDATE.name, "id": UPDATE.tenant_id(row), "read": _values(row, 1),
                    "write": _values(row, 4)})
    for row in plan.spool(ARCHIVE).rows():
        out.append({"action": ARCHIVE.name, "id": ARCHIVE.tenant_id(row), "read": _values(row, 1),
                    "write": {"status": "CLOSED"}, "orphan": row[4] == b"t"})
    return out


def plan_document(plan: Plan, staged: Staged, header: dict[str, Any]) -> dict[str, Any]:
    errors = [ERROR.entry(row) for row in plan.spool(ERROR).rows()]
    errors += [{"id": tenant_id, "error": error, "detail": detail}
               for tenant_id, (error, detail) in staged.rejected.items()]
    actions = _actions(plan, staged)
    counts = {kind.counted_as: sum(1 for a in actions if a["action"] == kind.name) for kind in WRITES}
    counts.update({"unchanged": plan.unchanged, ORPHAN.counted_as: plan.count(ORPHAN), ERROR.counted_as: len(errors),
                   SKIP.counted_as: plan.count(SKIP)})
    return {"format": FORMAT, "version": VERSION, **header, "counts": counts, "actions": actions, "errors": errors,
            "skipped_orphans": plan.skipped_orphans,
            ORPHAN.counted_as: [ORPHAN.entry(row) for row in plan.spool(ORPHAN).rows()],
            SKIP.counted_as: [SKIP.entry(row) for row in plan.spool(SKIP).rows()]}


def write_plan_file(path: str, document: dict[str, Any]) -> str:
    """Atomically (temp file in the same directory, fsync, rename); the sha256 of what was written."""
    data = orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class SavedPlan:
    path: str
    sha256: str
    document: dict[str, Any]

    @property
    def created_at(self) -> str:
        return str(self.document["created_at"])

    @property
    def only(self) -> tuple[str, ...] | None:
        """The restriction the plan was made with (`plan --only`): the run applying it keeps it."""
        only = self.document.get("only")
        return tuple(only) if only is not None else None

    def to_plan(self) -> Plan:
        """The plan as the pipeline applies it: the spools rebuilt from the file's actions."""
        doc = self.document
        plan = Plan(total=int(doc["product"]["tenants"]), target_total=int(doc["marketplace"]["tenants"]),
                    unchanged=int(doc["counts"].get("unchanged", 0)),
                    skipped_orphans=int(doc.get("skipped_orphans", 0)))
        for action in doc["actions"]:
            plan.spool(_KINDS[action["action"]]).add(copytext.line_of(_row(action)))
        for entry in doc["errors"]:
            plan.spool(ERROR).add(copytext.line_of([entry["id"], entry["error"], entry["detail"]]))
        for kind in (ORPHAN, SKIP):
            for tenant_id in doc.get(kind.counted_as, []):
                plan.spool(kind).add(copytext.line_of([tenant_id]))
        return plan

    def write_ids(self) -> tuple[str, ...]:
        return tuple(sorted({a["id"] for a in self.document["actions"]}, key=str.encode))


_KINDS = {kind.name: kind for kind in WRITES}
_WRITE_NAMES = set(_KINDS)


def _row(action: dict[str, Any]) -> list[str | None]:
    read, write = action.get("read") or {}, action["write"]
    if action["action"] == CREATE.name:
        return [action["id"], write["slug"], write["name"], write["plan"], write["status"]]
    old = [read.get(name) for name in _FIELDS]
    if action["action"] == UPDATE.name:
        return [action["id"], *old, write["name"], write["plan"], write["status"]]
    return [action["id"], *old, "t" if action.get("orphan") else "f"]


def created_at(document: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(document["created_at"]).replace("Z", "+00:00"))


def document_problem(document: dict[str, Any]) -> str | None:
    """What keeps a saved plan's `document` from being shown or applied, in a few words; None when
    nothing does (`show` and `run --plan` both refuse such a file, exit 2)."""
    return _header_problem(document) or _actions_problem(document)


def _header_problem(document: dict[str, Any]) -> str | None:
    if "created_at" not in document:
        return "created_at is missing"
    try:
        if not isinstance(document["created_at"], str) or created_at(document).tzinfo is None:
            raise ValueError
    except ValueError:
        return f"created_at {repr(document['created_at'])[:40]} is not a time (ISO 8601 with a time zone)"
    for key, kind in (("product", dict), ("marketplace", dict), ("counts", dict), ("actions", list),
                      ("errors", list)):
        if key not in document:
            return f"{key} is missing"
        if not isinstance(document[key], kind):
            return f"{key} is not {'an object' if kind is dict else 'a list'}"
    for key in ("product", "marketplace"):
        if not isinstance(document[key].get("db"), str):
            return f"{key}.db is missing"
        if not _is_count(document[key].get("tenants")):
            return f"{key}.tenants is not a number of tenants"
    if not _is_count(document.get("skipped_orphans", 0)):
        return "skipped_orphans is not a number"
    return None


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# What a planned write must say, by kind (the spool rows of pipeline.plan are rebuilt from it).
_WRITE_KEYS = {CREATE.name: ("slug", *_FIELDS), UPDATE.name: _FIELDS, ARCHIVE.name: ()}


def _actions_problem(document: dict[str, Any]) -> str | None:
    for n, action in enumerate(document["actions"], 1):
        if not isinstance(action, dict) or action.get("action") not in _WRITE_NAMES:
            return f"action {n} is not a create, update or archive"
        if not isinstance(action.get("id"), str):
            return f"action {n} has no tenant id"
        write = action.get("write")
        if not isinstance(write, dict) or not isinstance(action.get("read") or {}, dict):
            return f"action {n} has no values to write"
        missing = [key for key in _WRITE_KEYS[action["action"]] if key not in write]
        if missing:
            return f"action {n} has no {', '.join(missing)} to write"
    if any(not isinstance(error, dict) or not all(isinstance(error.get(k), str) for k in ("id", "error", "detail"))
           for error in document["errors"]):
        return "errors holds something that is not a row error (id, error, detail)"
    return None


def load_plan_file(path: str, expected: dict[str, Any], max_age_s: float) -> SavedPlan:
    """Read and check a saved plan against what this run would plan for (`expected`: the same
    header keys `plan --out` writes); ConfigError (exit 2) naming what differs."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"--plan {path} cannot be read: {exc.strerror or exc}") from None
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ConfigError(f"--plan {path} is not JSON (expected a file written by plan --out)") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ConfigError(f"--plan {path} is not a saved plan (expected a file written by plan --out)")
    if document.get("version") != VERSION:
        raise ConfigError(f"--plan {path} has format version {document.get('version')!r}; this tool reads {VERSION}")
    problem = document_problem(document)
    if problem:
        raise ConfigError(f"--plan {path} is not a complete saved plan: {problem}")
    for key, what in (("product", "product database"), ("marketplace", "marketplace database")):
        planned, here = document[key]["db"], expected[key]["db"]
        if planned != here:
            raise ConfigError(f"--plan {path} was made for the {what} {planned}, not {here}")
    for key, what in (("shard", "shard"), ("mapping", "mapping")):
        if document.get(key) != expected.get(key):
            raise ConfigError(f"--plan {path} was made with another {what}: make a new plan")
    age = time.time() - created_at(document).timestamp()
    if age > max_age_s:
        raise ConfigError(f"--plan {path} is {age / 3600:.1f} h old, more than --max-plan-age "
                          f"({max_age_s / 3600:g} h): make a new plan")
    return SavedPlan(path, hashlib.sha256(data).hexdigest(), document)


def header(run_id: str, product_db: str, market_db: str, shard: str, only: tuple[str, ...] | None,
           mapping: Mapping) -> dict[str, Any]:
    return {"run_id": run_id, "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "product": {"db": product_db}, "marketplace": {"db": market_db}, "shard": shard,
            "only": list(only) if only is not None else None, "mapping": mapping_fingerprint(mapping)}


def stale_actions(product: sa.Connection, saved: SavedPlan, mapping: Mapping, scope: Scope) -> dict[str, str]:
    """Planned tenants whose product row no longer maps to what the plan writes (id -> why)."""
    ids = saved.write_ids()
    if not ids:
        return {}
    query = mapping.product_select_sql(Scope(scope.shard, ids).where())
    now = {r[0]: r for r in product.exec_driver_sql(query.sql, query.params)}
    stale: dict[str, str] = {}
    for action in saved.document["actions"]:
        row = now.get(action["id"])
        if action["action"] == ARCHIVE.name:
            still = row is None if action.get("orphan") else row is not None and not row[4] and row[3] == ARCHIVED_MARK
        else:
            write = action["write"]
            still = row is not None and not row[4] and (row[1], row[2], row[3]) == (write["name"], write["plan"],
                                                                                    write["status"])
        if not still:
            stale[action["id"]] = "the product row changed since the plan was made"
    return stale
