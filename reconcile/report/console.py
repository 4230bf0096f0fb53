"""`--log-format console`: the events rendered for people at a terminal.

- Each action on a tenant is one aligned sentence (`+ create kbz-003  "KeyBuzz Labs"  DEV/TRIAL`).
- Every other event is one short line: time (UTC), level unless info, event, then `key=value`.
- `reconcile.report` is a block in the style of `terraform plan`: what the run planned, what it
  applied, its row errors and conflicts as tables, then its status, duration and exit code.
- `status` and `sync` answers render as small tables and blocks (`render_status`, `render_sync`).

Values are written plainly (strings bare, or double-quoted with JSON escapes when they hold spaces,
quotes or control characters; lists and dicts as compact JSON), never as Python reprs. A value from
a database row cannot break a line: a newline in a tenant name is shown as `\\n`.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import IO, Any

import orjson

from reconcile.actions import (
    ARCHIVE,
    CONFLICTS,
    CREATE,
    ERROR,
    INBOUND_CREATED,
    INBOUND_ERRORS,
    KINDS,
    ORPHAN,
    SKIP,
    UPDATE,
    WRITES,
)
from reconcile.report.model import FAILED, FOR_PEOPLE, STATUS_EXIT_CODES

ID_MIN_WIDTH = 16
_VERB_WIDTH = len("conflict")  # the longest verb but `inbound error`, which is rare: it sticks out
_HIDDEN = ("event", "level", "timestamp", FOR_PEOPLE)
_NEEDS_QUOTES = re.compile(r'[\s"=\\]|[\x00-\x1f\x7f-\x9f\u2028\u2029]')
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")

# ANSI colours (SGR codes), used only on a terminal.
_GREEN, _YELLOW, _RED, _MAGENTA, _CYAN, _DIM = "32", "33", "31", "35", "36", "2"
_KIND_COLORS = {CREATE: _GREEN, UPDATE: _YELLOW, ARCHIVE: _RED, ERROR: _RED, ORPHAN: _DIM}
# Each sentence's word and symbol: the action kinds' own (reconcile.actions), and three outcomes that
# are not kinds (a lost compare-and-set, an inbound address created, an inbound row error).
_SYMBOLS = {kind.name: (kind.symbol, _KIND_COLORS.get(kind)) for kind in KINDS if kind.symbol}
_SYMBOLS |= {"conflict": ("?", _MAGENTA), "inbound": ("@", _CYAN), "inbound error": (ERROR.symbol, _RED)}
_LEVEL_COLORS = {"warning": _YELLOW, "error": _RED, "critical": _RED, "debug": _DIM}


def use_colors(stream: IO[Any]) -> bool:
    """Colours on a terminal only, and not when NO_COLOR is set (https://no-color.org)."""
    try:
        return bool(stream.isatty()) and not os.environ.get("NO_COLOR")
    except (AttributeError, ValueError, OSError):
        return False


# -- values ---------------------------------------------------------------------------------------------

def _jsonable(value: Any) -> Any:
    """A value as JSON can hold it: sets sorted into lists, dates as ISO 8601, anything else as text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted((_jsonable(v) for v in value), key=str)
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def quoted(text: str) -> str:
    """Double-quoted with JSON escapes: control characters and quotes cannot break the line."""
    return json.dumps(text, ensure_ascii=False)


def plain(value: Any) -> str:
    """One value as people read it: `abc`, `"a b"`, `3`, `true`, `null`, `["FR","DE"]`."""
    value = _jsonable(value)
    if isinstance(value, str):
        return quoted(value) if not value or _NEEDS_QUOTES.search(value) else value
    return orjson.dumps(value).decode()  # lists, dicts, numbers, booleans, null: compact JSON


def _cell(value: Any) -> str:
    """A table cell: text as it is (control characters escaped), None as `-`, the rest plainly."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return _CONTROL.sub(lambda m: quoted(m.group())[1:-1], value)
    return plain(value)


def _width(text: str) -> int:
    """Terminal cells: East Asian wide glyphs take two, combining marks none."""
    return sum(0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
               for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - _width(text))


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Rows under headers, columns aligned, in plain ASCII (` | ` between columns, `-+-` under the
    headers). Cells: None is `-`, text as it is, other values plainly; no trailing spaces."""
    lines = [[_cell(h) for h in headers], *([_cell(v) for v in row] for row in rows)]
    widths = [max(_width(line[i]) for line in lines) for i in range(len(headers))]
    out = [" | ".join(_pad(cell, w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines]
    out.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(out)


def _paint(text: str, code: str | None, colors: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if colors and code else text


def count_of(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


# -- sentences ---------------------------------------------------------------------------------------------

class IdColumn:
    """The width of the id column: at least ID_MIN_WIDTH, growing with the widest id seen, so that the
    sentences of an event stream, rendered one by one, line up."""

    def __init__(self, minimum: int = ID_MIN_WIDTH) -> None:
        self.width = minimum

    def fit(self, *ids: str) -> int:
        for ident in ids:
            self.width = max(self.width, _width(ident))
        return self.width


@dataclass(frozen=True)
class Layout:
    """How action sentences are laid out. An event stream pads its verbs, so that its sentences line
    up, and always quotes names (the console rendering of a run); a saved plan (`show`) is a list of
    actions alone: verbs unpadded and, in changes, names bare (control characters still escaped)."""

    verb_width: int = _VERB_WIDTH
    quote_names: bool = True


EVENTS = Layout()
PLAN = Layout(verb_width=0, quote_names=False)


def sentence(verb: str, tenant_id: Any, rest: str = "", *, ids: IdColumn | None = None,
             colors: bool = False, layout: Layout = EVENTS) -> str:
    """`+ create   kbz-003           "KeyBuzz Labs"  DEV/TRIAL`: symbol, verb, padded id, the rest."""
    symbol, color = _SYMBOLS[verb]
    ident = plain(tenant_id)
    width = (ids or IdColumn()).fit(ident)
    head = _paint(f"{symbol} {verb:<{layout.verb_width}}", color, colors)
    return f"{head} {_pad(ident, width)}  {rest}".rstrip()


def _name(value: Any) -> str:
    """A tenant name, always quoted (it usually holds spaces); NULL as `(null)`."""
    return "(null)" if value is None else quoted(str(value))


def _change_value(field: str, value: Any, layout: Layout) -> str:
    if value is None:
        return "(null)"
    if field == "name":
        return _name(value) if layout.quote_names else _cell(str(value))
    return plain(value)


def changes_text(changes: Mapping[str, Any], layout: Layout = EVENTS) -> str:
    """`plan STARTER -> PRO, name (null) -> "Acme"`."""
    return ", ".join(f"{field} {_change_value(field, old, layout)} -> {_change_value(field, new, layout)}"
                     for field, (old, new) in changes.items())


def _action(event_dict: Mapping[str, Any], layout: Layout = EVENTS) -> tuple[str, str] | None:
    """(verb, rest) of an action event, None for any other event (or one missing its fields)."""
    event, get = event_dict.get("event"), event_dict.get
    if event == CREATE.event:
        return CREATE.name, _create_text(event_dict)
    if event == UPDATE.event and isinstance(get("changes"), Mapping):
        try:
            return UPDATE.name, changes_text(get("changes"), layout)
        except (TypeError, ValueError):  # not [old, new] pairs: rendered as an ordinary line
            return None
    if event == ARCHIVE.event:
        return ARCHIVE.name, "(orphan)" if get("orphan") is True else ""
    if event == ERROR.event:
        verb = "inbound error" if get("scope") == "inbound" else ERROR.name
        return verb, f"{_cell(get('error'))}: {_cell(get('detail'))}"
    if event == "tenant.conflict":
        return "conflict", f"{_cell(get('action'))}: {_cell(get('detail'))}"
    if event == "inbound.created":
        return "inbound", f"{_cell(get('country'))}  {_cell(get('email'))}"
    return None


def action_sentence(event_dict: Mapping[str, Any], ids: IdColumn, colors: bool = False,
                    layout: Layout = EVENTS) -> str | None:
    """An action event (`tenant.created`, ...) as its sentence; None for any other event. The one
    rendering of an action: a run's events and a saved plan's actions (`show`) both go through it."""
    action = _action(event_dict, layout)
    if action is None:
        return None
    verb, rest = action
    return sentence(verb, event_dict.get("tenant_id"), rest, ids=ids, colors=colors, layout=layout)


# -- ordinary events ---------------------------------------------------------------------------------------

def _clock(stamp: Any) -> str:
    """HH:MM:SS of the event's ISO 8601 timestamp (UTC, as in the JSON lines)."""
    text = str(stamp or "")
    return text[11:19] if len(text) >= 19 and text[10] == "T" else text


def key_values(fields: Mapping[str, Any]) -> str:
    """`key=value key=value`, values plainly; keys holding None are left out (nothing to say)."""
    return " ".join(f"{key}={plain(value)}" for key, value in fields.items() if value is not None)


def line(event_dict: Mapping[str, Any], colors: bool = False) -> str:
    """`02:00:03 warning db.retry  attempt=2 ...`: the level only when it is not info; the run id only
    on `reconcile.start` (every other line of a run belongs to the last start above it)."""
    level = str(event_dict.get("level") or "info").lower()
    shown = "" if level == "info" else _paint(level, _LEVEL_COLORS.get(level), colors) + " "
    event = _cell(str(event_dict.get("event")))
    fields = {k: v for k, v in event_dict.items()
              if k not in _HIDDEN and not (k == "run_id" and event != "reconcile.start")}
    pairs = key_values(fields)
    return f"{_clock(event_dict.get('timestamp'))} {shown}{event}" + (f"  {pairs}" if pairs else "")


# -- the report --------------------------------------------------------------------------------------------

def exit_code(report: Mapping[str, Any]) -> int:
    """The report's exit code (reconcile.report.model): a failed run's own, which is not always 7."""
    status = report.get("status")
    if status != FAILED and status in STATUS_EXIT_CODES:
        return STATUS_EXIT_CODES[status]
    return int(report.get("exit_code") or STATUS_EXIT_CODES[FAILED])


def _truncation(report: Mapping[str, Any], shown: int, total: int) -> str | None:
    """`first N of M`, when the report says its lists were cut and this one was."""
    return f"first {shown} of {total}" if report.get("truncated") and shown < total else None


def _orphans_note(report: Mapping[str, Any], counts: Mapping[str, int]) -> str:
    orphans = counts.get(ORPHAN.counted_as, 0)
    if not orphans:
        return count_of(0, ORPHAN.verb)
    archived = set(report.get(ARCHIVE.counted_as) or [])
    gone = sum(1 for tenant_id in report.get(ORPHAN.counted_as) or [] if tenant_id in archived)
    listed = len(report.get(ORPHAN.counted_as) or [])
    note = "reported" if not gone else ARCHIVE.counted_as if gone == listed else f"{gone} {ARCHIVE.counted_as}"
    return f"{count_of(orphans, ORPHAN.verb)} ({note})"


def plan_line(report: Mapping[str, Any]) -> str:
    """`Plan: 2 to create, 1 to update, 1 to archive. 1 orphan (reported), 0 row errors, 0 skipped.`"""
    counts = report.get("counts") or {}
    writes = [f"{counts.get(kind.counted_as, 0)} to {kind.verb}" for kind in WRITES]
    if "inbound" in report:
        writes.append(f"{count_of(counts.get(INBOUND_CREATED, 0), 'inbound address', 'inbound addresses')} to add")
    findings = [_orphans_note(report, counts), count_of(counts.get(ERROR.counted_as, 0), ERROR.verb)]
    if counts.get(INBOUND_ERRORS):
        findings.append(count_of(counts[INBOUND_ERRORS], "inbound error"))
    findings.append(f"{counts.get(SKIP.counted_as, 0)} {SKIP.counted_as}")
    return f"Plan: {', '.join(writes)}. {', '.join(findings)}."


def applied_line(report: Mapping[str, Any]) -> str:
    """`Applied: 2 created, 1 updated, 1 archived; 0 conflicts.`"""
    counts = report.get("counts") or {}
    done = [f"{counts.get(kind.counted_as, 0)} {kind.counted_as}" for kind in WRITES]
    if "inbound" in report:
        done.append(f"{count_of(counts.get(INBOUND_CREATED, 0), 'inbound address', 'inbound addresses')} added")
    return f"Applied: {', '.join(done)}; {count_of(counts.get(CONFLICTS, 0), 'conflict')}."


def _create_text(fields: Mapping[str, Any] | None) -> str:
    """What a create sentence shows after the id: `"KeyBuzz Labs"  DEV/TRIAL` (nothing when unknown)."""
    if not fields:
        return ""
    return f"{_name(fields.get('name'))}  {_cell(fields.get('plan'))}/{_cell(fields.get('status'))}"


def planned_sentences(report: Mapping[str, Any], ids: IdColumn, colors: bool = False) -> list[str]:
    """The report's lists as sentences: every planned action when none was announced (a dry run, or
    a run the guard stopped), else only the orphans left in place (no event announces those)."""
    counts = report.get("counts") or {}
    orphans = list(report.get("orphans") or [])
    archived = list(report.get("archived") or [])
    updated = [u for u in report.get("updated") or [] if isinstance(u, Mapping)]
    kept = [o for o in orphans if o not in set(archived)]
    ids.fit(*(plain(i) for i in [*(report.get("created") or []), *archived, *orphans, *(u.get("id") for u in updated)]))
    out: list[str] = []

    def say(verb: str, entries: list[tuple[Any, str]], key: str, what: str, listed: int | None = None) -> None:
        """The sentences, then `(first N of M creates shown)` when the report's list was cut."""
        out.extend(sentence(verb, tenant_id, rest, ids=ids, colors=colors) for tenant_id, rest in entries)
        cut = _truncation(report, len(entries) if listed is None else listed, counts.get(key, 0))
        if cut and entries:
            out.append(f"({cut} {what} shown)")

    if report.get("mode") == "dry-run" or report.get("status") == "aborted":
        orphan_ids = set(orphans)
        fields = (report.get(FOR_PEOPLE) or {}).get("created") or {}
        say("create", [(i, _create_text(fields.get(i))) for i in report.get("created") or []], "created", "creates")
        say("update", [(u.get("id"), changes_text(u.get("changes") or {})) for u in updated], "updated", "updates")
        say("archive", [(i, "(orphan)" if i in orphan_ids else "") for i in archived], "archived", "archives")
    say("orphan", [(i, "(reported)") for i in kept], "orphans", "orphans", listed=len(orphans))
    return out


def _tables(report: Mapping[str, Any]) -> list[str]:
    """The row errors and the conflicts, each as a table under its title."""
    counts = report.get("counts") or {}
    out: list[str] = []
    errors = [e for e in report.get("errors") or [] if isinstance(e, Mapping)]
    if errors:
        cut = _truncation(report, len(errors), counts.get("errors", 0) + counts.get("inbound_errors", 0))
        rows = [[e.get("id"), f"{e.get('error')} ({e['scope']})" if e.get("scope") else e.get("error"),
                 e.get("detail")] for e in errors]
        out += ["", f"Row errors{f' ({cut} shown)' if cut else ''}:", table(["id", "error", "detail"], rows)]
    conflicts = list(report.get("conflicts") or [])
    if conflicts:
        cut = _truncation(report, len(conflicts), counts.get("conflicts", 0))
        out += ["", f"Conflicts{f' ({cut} shown)' if cut else ''}:", table(["id"], [[c] for c in conflicts])]
    return out


def _seconds(report: Mapping[str, Any]) -> str:
    total = (report.get("timings_ms") or {}).get("total")
    return f"{total / 1000:.1f} s" if isinstance(total, int | float) else "? s"


def _trigger(report: Mapping[str, Any]) -> str:
    """` · event from pg` and the like: what started a run that no one started by hand."""
    trigger = report.get("trigger")
    if not trigger or trigger == "manual":
        return ""
    source = report.get("source")
    event = source.get("event") if isinstance(source, Mapping) else None
    return f" · {trigger}" + (f" from {event}" if event else "")


def _outcome_lines(report: Mapping[str, Any], colors: bool) -> list[str]:
    status = str(report.get("status"))
    color = {"success": _GREEN, "partial": _YELLOW}.get(status, _RED)
    out = [f"Status: {_paint(status, color, colors)} · {_seconds(report)} · exit {exit_code(report)}"
           f"{_trigger(report)}"]
    if report.get("error") and status in ("failed", "aborted", "locked"):
        out.append(f"Error: {_cell(report['error'])}")
    if status == "aborted" and isinstance(report.get("guard"), Mapping):
        out.append(f"Guard: {key_values(report['guard'])}")
    if status == "locked" and isinstance(report.get("lock_holder"), Mapping):
        out.append(f"Lock holder: {key_values(report['lock_holder'])}")
    return out


def render_report(report: Mapping[str, Any], ids: IdColumn | None = None, colors: bool = False) -> str:
    """The `reconcile.report` event as a block (it starts with an empty line, to stand apart from the
    events above it). A run that failed or was locked never got as far as a plan: no Plan line."""
    ids = ids or IdColumn()
    out = [""]
    planned = report.get("status") in ("success", "partial", "aborted")
    if planned:
        listed = planned_sentences(report, ids, colors)
        out += [*listed, ""] if listed else []
        out.append(plan_line(report))
        if report.get("status") != "aborted":
            out.append("Dry run: nothing written." if report.get("mode") == "dry-run" else applied_line(report))
        if isinstance(report.get("inbound"), Mapping):
            out.append(f"Inbound: {key_values(report['inbound'])}")
        tables = _tables(report)
        out += [*tables, ""] if tables else []
    out += _outcome_lines(report, colors)
    return "\n".join(out)


# -- the structlog renderer ---------------------------------------------------------------------------------

class ConsoleRenderer:
    """structlog's final processor for `--log-format console`: action events as sentences, the report
    as a block, every other event as one short line."""

    def __init__(self, colors: bool = False, min_id_width: int = ID_MIN_WIDTH) -> None:
        self.colors = colors
        self.ids = IdColumn(min_id_width)

    def __call__(self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> str:
        if event_dict.get("event") == "reconcile.report":
            return render_report(event_dict, self.ids, self.colors)
        said = action_sentence(event_dict, self.ids, self.colors)
        return said if said is not None else line(event_dict, self.colors)


# -- the single-tenant answers ------------------------------------------------------------------------------

_FIELDS = ("name", "plan", "status")


def _yes_no(value: Any) -> Any:
    return ("yes" if value else "no") if isinstance(value, bool) else value


def _side_cells(side: Mapping[str, Any] | None) -> list[Any]:
    side = side or {}
    exists = bool(side.get("exists"))
    return [_yes_no(exists), *((("(null)" if side.get(f) is None else side.get(f)) if exists else None)
                               for f in _FIELDS)]


def _listing(title: str, headers: Sequence[str], rows: list[Mapping[str, Any]]) -> list[str]:
    if not rows:
        return ["", f"{title}: none"]
    return ["", f"{title}:", table(headers, [[row.get(h) for h in headers] for row in rows])]


def render_status(answer: Mapping[str, Any]) -> str:
    """`status TENANT_ID`: both rows side by side, the differences, the inbound addresses and the
    marketplace connections, each as a small table."""
    product, market = answer.get("product") or {}, answer.get("marketplace") or {}
    if not product.get("exists") and not market.get("exists"):
        verdict = "in neither database"
    else:
        verdict = "in sync" if answer.get("inSync") else "not in sync"
    out = [f"Tenant {plain(answer.get('tenantId'))}: {verdict}", ""]
    sides = list(zip(("exists", *_FIELDS), _side_cells(product), _side_cells(market), strict=True))
    out.append(table(["field", "product", "marketplace"], [list(row) for row in sides]))
    differences = [d for d in answer.get("differences") or [] if isinstance(d, Mapping)]
    if differences:
        headers = ["field", "product", "marketplace"] + (["error"] if any("error" in d for d in differences) else [])
        rows = [[_yes_no(d.get(h)) for h in headers] for d in differences]
        out += ["", "Differences (what a run would write):", table(headers, rows)]
    else:
        out += ["", "Differences: none"]
    out += _listing("Inbound addresses", ["marketplace", "country", "email", "status"],
                    list(answer.get("inboundAddresses") or []))
    out += _listing("Marketplace connections", ["type", "status", "displayName"],
                    list(answer.get("marketplaceConnections") or []))
    return "\n".join(out)


def render_sync(answer: Mapping[str, Any]) -> str:
    """`sync TENANT_ID`'s answer: whether it succeeded, the marketplace row, the inbound address."""
    out = [f"Sync: {'success' if answer.get('success') else 'failed'}"]
    if "tenant" in answer:
        tenant = answer.get("tenant")
        if isinstance(tenant, Mapping):
            out.append(f"Tenant: {plain(tenant.get('id'))}  {_name(tenant.get('name'))}  "
                       f"{_cell(tenant.get('plan'))}/{_cell(tenant.get('status'))}")
        else:
            out.append("Tenant: not in the marketplace")
        address = answer.get("inboundAddress")
        out.append(f"Inbound address: {_cell(address) if address else 'none'}")
    if answer.get("error"):
        out.append(f"Error: {_cell(answer['error'])}")
    return "\n".join(out)
