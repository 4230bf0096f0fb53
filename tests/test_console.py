"""`--log-format console`: the rendering for people at a terminal. Snapshots of the renderer on
fixed events, then the real CLI against a real PostgreSQL."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import re
import subprocess
import sys

import pytest

from reconcile.report.console import ConsoleRenderer, plain, render_report, render_status, render_sync, table
from tests.pgtools import REPO, run_cli

STAMP = "2026-11-24T02:00:03.120Z"

# What a Python repr looks like, and must never appear in console output: dicts and lists of strings
# (`{'created': 6}`, `=['FR']`, `', '`), the constants, datetimes, objects. Compact JSON (`=["FR"]`) is
# how lists are meant to render.
REPR_PATTERNS = (r"\{'", r"'\}", r"\['", r"'\]", r"', '", r"': ", r"\bTrue\b", r"\bFalse\b", r"\bNone\b",
                 r"datetime\.", r"Decimal\(", r"<[A-Za-z_.]+ object at 0x")


def assert_no_repr(text: str) -> None:
    for pattern in REPR_PATTERNS:
        assert not re.search(pattern, text), f"a Python repr ({pattern}) in:\n{text}"


def event(kind: str, level: str = "info", /, **fields) -> dict:
    return {"event": kind, "level": level, "timestamp": STAMP, "run_id": "f03e3e3943514cb3a3a171b246d1c474",
            **fields}


def render(*events: dict, renderer: ConsoleRenderer | None = None) -> str:
    renderer = renderer or ConsoleRenderer()
    return "\n".join(renderer(None, e["level"], dict(e)) for e in events)


def counts(**given: int) -> dict[str, int]:
    base = dict.fromkeys(("created", "updated", "archived", "unchanged", "orphans", "errors", "skipped",
                          "conflicts", "inbound_created", "inbound_errors"), 0)
    base.update(given)
    return base


def report(**fields) -> dict:
    body = {"mode": "apply", "status": "success", "shard": "0/1", "total": 7,
            "counts": counts(created=2, updated=1, archived=1, unchanged=3, orphans=1),
            "created": ["kbz-003", "kbz-004"], "updated": [{"id": "kbz-002", "changes": {"plan": ["STARTER", "PRO"]}}],
            "archived": ["kbz-005"], "orphans": ["legacy-009"], "errors": [], "skipped": [], "conflicts": [],
            "truncated": False, "timings_ms": {"snapshot": 1.5, "diff": 0.2, "apply": 7.2, "total": 412.6},
            "source": {"db": "db-product:5432/keybuzz", "tenants": 7},
            "target": {"db": "db-marketplace:5432/keybuzz_backend", "tenants": 6}}
    body.update(fields)
    return event("reconcile.report", level="info" if body["status"] == "success" else "warning", **body)


# -- action events as sentences -----------------------------------------------------------------------

def test_action_events_render_as_aligned_sentences():
    out = render(
        event("tenant.created", tenant_id="kbz-003", name="KeyBuzz Labs", plan="DEV", status="TRIAL"),
        event("tenant.updated", tenant_id="kbz-002", changes={"plan": ["STARTER", "PRO"]}),
        event("tenant.archived", tenant_id="kbz-005", previous_status="ACTIVE", orphan=False),
        event("tenant.archived", tenant_id="legacy-009", previous_status="ACTIVE", orphan=True),
        event("tenant.error", "warning", tenant_id="kbz-009", error="invalid_plan",
              detail="plan 'gold' has no mapping"),
        event("tenant.conflict", "warning", tenant_id="kbz-010", action="update",
              detail="the marketplace row changed during the run"),
        event("inbound.created", tenant_id="kbz-003", country="FR", marketplace="amazon",
              email="amazon.kbz-003.fr.ab12cd@inbound.keybuzz.io"),
    )
    assert out.splitlines() == [
        '+ create   kbz-003           "KeyBuzz Labs"  DEV/TRIAL',
        "~ update   kbz-002           plan STARTER -> PRO",
        "- archive  kbz-005",
        "- archive  legacy-009        (orphan)",
        "! error    kbz-009           invalid_plan: plan 'gold' has no mapping",
        "? conflict kbz-010           update: the marketplace row changed during the run",
        "@ inbound  kbz-003           FR  amazon.kbz-003.fr.ab12cd@inbound.keybuzz.io",
    ]


def test_an_update_of_several_fields_joins_them_and_shows_null_as_null():
    out = render(event("tenant.updated", tenant_id="kbz-002", changes={
        "name": [None, "Acme Inc"], "plan": ["STARTER", "PRO"], "status": ["ACTIVE", "SUSPENDED"]}))
    assert out == ('~ update   kbz-002           name (null) -> "Acme Inc", plan STARTER -> PRO, '
                   "status ACTIVE -> SUSPENDED")


def test_an_inbound_row_error_is_marked_inbound():
    out = render(event("tenant.error", "warning", tenant_id="Bad Id", error="invalid_id_for_email",
                       detail="the id cannot be part of an e-mail address", scope="inbound"))
    assert out == ('! inbound error "Bad Id"          invalid_id_for_email: the id cannot be part of an e-mail '
                   "address")


def test_ids_are_padded_to_the_widest_seen_so_far():
    renderer = ConsoleRenderer()
    long_id = "tenant-with-a-very-long-id-0001"
    out = render(event("tenant.archived", tenant_id="a", orphan=False),
                 event("tenant.updated", tenant_id=long_id, changes={"plan": ["DEV", "PRO"]}),
                 event("tenant.updated", tenant_id="b", changes={"plan": ["DEV", "PRO"]}), renderer=renderer)
    assert out.splitlines() == [
        "- archive  a",
        f"~ update   {long_id}  plan DEV -> PRO",
        f"~ update   {'b':<{len(long_id)}}  plan DEV -> PRO",
    ]


def test_a_name_with_a_newline_or_quotes_stays_on_one_line():
    out = render(event("tenant.created", tenant_id="x", name='Evil\n+ create fake "quoted"', plan="DEV",
                       status="TRIAL"))
    assert out == r'+ create   x                 "Evil\n+ create fake \"quoted\""  DEV/TRIAL'


# -- every other event as one short line ---------------------------------------------------------------

def test_other_events_are_one_short_line_of_plain_key_values():
    out = render(
        event("reconcile.start", mode="dry-run", shard="0/1", source="db-product:5432/keybuzz",
              target="db-marketplace:5432/keybuzz_backend", product_from="PRODUCT_DATABASE_URL",
              marketplace_from=None),
        event("lock.acquired", shard="0/1"),
        event("db.retry", "warning", database="marketplace", db="m:5432/x", attempt=2, wait_s=0.5,
              error="connection refused by the server"),
        event("schedule.started", cron="0 2 * * *", timezone="UTC", next=["2026-11-25T02:00:00+00:00"],
              listen=False, figures={"a": 1, "b": [True, None]}),
    )
    assert out.splitlines() == [
        "02:00:03 reconcile.start  run_id=f03e3e3943514cb3a3a171b246d1c474 mode=dry-run shard=0/1 "
        "source=db-product:5432/keybuzz target=db-marketplace:5432/keybuzz_backend product_from=PRODUCT_DATABASE_URL",
        "02:00:03 lock.acquired  shard=0/1",
        '02:00:03 warning db.retry  database=marketplace db=m:5432/x attempt=2 wait_s=0.5 '
        'error="connection refused by the server"',
        '02:00:03 schedule.started  cron="0 2 * * *" timezone=UTC next=["2026-11-25T02:00:00+00:00"] listen=false '
        'figures={"a":1,"b":[true,null]}',
    ]
    assert_no_repr(out)


def test_plain_values_are_never_python_reprs():
    from datetime import UTC, datetime
    from decimal import Decimal

    assert plain("abc") == "abc"
    assert plain("a b") == '"a b"'
    assert plain("") == '""'
    assert plain('say "hi"') == '"say \\"hi\\""'
    assert plain(True) == "true" and plain(False) == "false" and plain(None) == "null"
    assert plain(3) == "3" and plain(0.25) == "0.25"
    assert plain(datetime(2026, 11, 24, 2, 0, 3, tzinfo=UTC)) == "2026-11-24T02:00:03+00:00"
    assert plain({"since": datetime(2026, 11, 24, tzinfo=UTC), "n": Decimal("1.5")}) == \
        '{"since":"2026-11-24T00:00:00+00:00","n":"1.5"}'
    assert plain({"b", "a"}) == '["a","b"]'
    assert plain(("FR", "DE")) == '["FR","DE"]'
    assert plain(b"bytes") == "bytes"


def test_a_library_warning_through_stdlib_logging_renders_as_a_short_line():
    from reconcile.report.logs import configure_logging

    stream = io.StringIO()
    configure_logging("console", stream=stream)
    try:
        logging.getLogger("some.library").warning("pool %s is full", "main")
    finally:
        configure_logging("json")
    line = stream.getvalue().strip()
    assert re.fullmatch(r"\d\d:\d\d:\d\d warning pool main is full  logger=some\.library", line), line


def test_structlog_events_go_through_the_console_renderer():
    from reconcile.report.logs import configure_logging, get_logger

    stream = io.StringIO()
    configure_logging("console", stream=stream)
    try:
        log = get_logger(run_id="r1")
        log.info("tenant.created", tenant_id="kbz-003", name="KeyBuzz Labs", plan="DEV", status="TRIAL")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("http.internal_error", path="/sync")
    finally:
        configure_logging("json")
    lines = stream.getvalue().splitlines()
    assert lines[0] == '+ create   kbz-003           "KeyBuzz Labs"  DEV/TRIAL'
    assert re.fullmatch(r'\d\d:\d\d:\d\d error http\.internal_error  path=/sync exception=ValueError message=boom '
                        r'frames=\[\{"file":.*"function":"test_structlog_events_go_through_the_console_renderer"\}\]',
                        lines[1]), lines[1]
    assert len(lines) == 2  # no traceback block, no locals
    assert_no_repr(stream.getvalue())


# -- the report block -----------------------------------------------------------------------------------

def test_a_dry_run_report_lists_the_plan_then_the_plan_line():
    out = render(report(mode="dry-run"))
    assert out == "\n".join([
        "",
        "+ create   kbz-003",
        "+ create   kbz-004",
        "~ update   kbz-002           plan STARTER -> PRO",
        "- archive  kbz-005",
        "* orphan   legacy-009        (reported)",
        "",
        "Plan: 2 to create, 1 to update, 1 to archive. 1 orphan (reported), 0 row errors, 0 skipped.",
        "Dry run: nothing written.",
        "Status: success · 0.4 s · exit 0",
    ])
    assert_no_repr(out)


def test_an_apply_report_says_what_was_applied_and_does_not_repeat_the_events():
    out = render(report())
    assert out == "\n".join([
        "",
        "* orphan   legacy-009        (reported)",
        "",
        "Plan: 2 to create, 1 to update, 1 to archive. 1 orphan (reported), 0 row errors, 0 skipped.",
        "Applied: 2 created, 1 updated, 1 archived; 0 conflicts.",
        "Status: success · 0.4 s · exit 0",
    ])


def test_count_words_are_singular_or_plural():
    out = render(report(counts=counts(created=1, updated=2, archived=0, orphans=2, errors=1, skipped=1,
                                      conflicts=1), orphans=["o1", "o2"], archived=[], created=["c"],
                        updated=[], errors=[{"id": "e", "error": "invalid_plan", "detail": "d"}],
                        conflicts=["k"], skipped=["s"], status="partial"))
    assert "Plan: 1 to create, 2 to update, 0 to archive. 2 orphans (reported), 1 row error, 1 skipped." in out
    assert "Applied: 1 created, 2 updated, 0 archived; 1 conflict." in out


def test_orphans_archived_are_said_archived():
    out = render(report(counts=counts(archived=2, orphans=1), created=[], updated=[],
                        archived=["kbz-005", "legacy-009"], orphans=["legacy-009"]))
    assert "Plan: 0 to create, 0 to update, 2 to archive. 1 orphan (archived), 0 row errors, 0 skipped." in out
    assert "* orphan" not in out  # announced by its tenant.archived event
    dry = render(report(mode="dry-run", counts=counts(archived=2, orphans=1), created=[], updated=[],
                        archived=["kbz-005", "legacy-009"], orphans=["legacy-009"]))
    assert "- archive  kbz-005\n- archive  legacy-009        (orphan)\n" in dry and "* orphan" not in dry


def test_a_null_name_renders_as_null_not_as_a_repr():
    out = render(event("tenant.created", tenant_id="a", name=None, plan="DEV", status="TRIAL"),
                 event("tenant.updated", tenant_id="a", changes={"name": [None, "A"]}))
    assert out.splitlines() == ["+ create   a                 (null)  DEV/TRIAL",
                                '~ update   a                 name (null) -> "A"']


def test_a_partial_run_shows_its_row_errors_and_conflicts_as_tables():
    errors = [{"id": "kbz-009", "error": "invalid_plan", "detail": "plan 'gold' has no mapping"},
              {"id": "Bad Id", "error": "invalid_id_for_email", "detail": "not an e-mail part", "scope": "inbound"}]
    body = report(status="partial", counts=counts(created=1, errors=1, inbound_errors=1, conflicts=1),
                  created=["kbz-003"], updated=[], archived=[], orphans=[], errors=errors, conflicts=["kbz-010"])
    out = render(body)
    assert out == "\n".join([
        "",
        "Plan: 1 to create, 0 to update, 0 to archive. 0 orphans, 1 row error, 1 inbound error, 0 skipped.",
        "Applied: 1 created, 0 updated, 0 archived; 1 conflict.",
        "",
        "Row errors:",
        "id      | error                          | detail",
        "--------+--------------------------------+---------------------------",
        "kbz-009 | invalid_plan                   | plan 'gold' has no mapping",
        "Bad Id  | invalid_id_for_email (inbound) | not an e-mail part",
        "",
        "Conflicts:",
        "id",
        "-------",
        "kbz-010",
        "",
        "Status: partial · 0.4 s · exit 3",
    ])


def test_truncated_lists_say_how_many_are_shown():
    body = report(mode="dry-run", status="partial", truncated=True,
                  counts=counts(created=1500, errors=1200),
                  created=["a", "b"], updated=[], archived=[], orphans=[],
                  errors=[{"id": "e1", "error": "invalid_plan", "detail": "d"}])
    out = render(body)
    assert "+ create   b\n(first 2 of 1500 creates shown)" in out
    assert "Row errors (first 1 of 1200 shown):" in out


@pytest.mark.parametrize(("trigger", "event", "suffix"), [
    ("manual", None, ""), (None, None, ""), ("schedule", None, " · schedule"), ("startup", None, " · startup"),
    ("event", "pg,redis", " · event from pg,redis"),
])
def test_the_status_line_says_what_started_a_run_no_one_started_by_hand(trigger, event, suffix):
    body = report(status="failed", counts=counts(), created=[], updated=[], archived=[], orphans=[], error="x",
                  exit_code=7, trigger=trigger)
    if event:
        body["source"] = {**body["source"], "event": event}
    assert render(body).splitlines()[1] == f"Status: failed · 0.4 s · exit 7{suffix}"


def test_a_failed_run_shows_its_error_and_exit_code():
    body = report(status="failed", counts=counts(), created=[], updated=[], archived=[], orphans=[],
                  error="cannot connect to the marketplace database m:5432/x: connection refused", exit_code=7)
    body["level"] = "error"
    out = render(body)
    assert out == "\n".join([
        "",
        "Status: failed · 0.4 s · exit 7",
        "Error: cannot connect to the marketplace database m:5432/x: connection refused",
    ])


def test_a_failed_run_without_exit_code_is_exit_7_and_an_internal_error_keeps_its_own():
    base = {"counts": counts(), "created": [], "updated": [], "archived": [], "orphans": [], "error": "x"}
    assert "exit 7" in render(report(status="failed", **base))
    assert "exit 1" in render(report(status="failed", exit_code=1, **base))


def test_an_aborted_run_shows_what_it_would_have_done_and_the_guard_figures():
    guard = {"reason": "too many archives", "archives": 12, "max_archive": 10, "max_archive_ratio": 0.1,
             "source_tenants": 20, "target_tenants": 30}
    body = report(status="aborted", counts=counts(archived=12, unchanged=8), created=[], updated=[],
                  archived=[f"t{i:02d}" for i in range(12)], orphans=[], guard=guard,
                  planned={"create": 0, "update": 0, "archive": 12, "orphans": 0, "errors": 0, "skipped": 0},
                  error="safety guard: too many archives; nothing written")
    out = render(body)
    assert "- archive  t00\n" in out and "- archive  t11\n" in out  # not announced: nothing was written
    assert "Plan: 0 to create, 0 to update, 12 to archive. 0 orphans, 0 row errors, 0 skipped." in out
    assert "Applied:" not in out
    assert out.endswith("\n".join([
        "Status: aborted · 0.4 s · exit 5",
        "Error: safety guard: too many archives; nothing written",
        'Guard: reason="too many archives" archives=12 max_archive=10 max_archive_ratio=0.1 source_tenants=20 '
        "target_tenants=30",
    ]))


def test_a_locked_run_names_the_lock_holder():
    from datetime import UTC, datetime

    holder = {"pid": 4242, "application_name": "tenant-reconcile apply 0/1 1a2b3c4d", "client_addr": "local socket",
              "since": datetime(2026, 11, 24, 1, 59, tzinfo=UTC)}
    body = report(status="locked", counts=counts(), created=[], updated=[], archived=[], orphans=[],
                  error="another run holds the lock for shard 0/1", lock_holder=holder)
    out = render(body)
    assert out.endswith("\n".join([
        "Status: locked · 0.4 s · exit 6",
        "Error: another run holds the lock for shard 0/1",
        'Lock holder: pid=4242 application_name="tenant-reconcile apply 0/1 1a2b3c4d" client_addr="local socket" '
        "since=2026-11-24T01:59:00+00:00",
    ]))
    assert "Plan:" not in out  # the run never got as far as a plan
    assert_no_repr(out)


def test_the_inbound_step_is_in_the_plan_and_applied_lines():
    body = report(counts=counts(created=1, unchanged=2, inbound_created=3), created=["a"], updated=[],
                  archived=[], orphans=[], inbound={"countries": ["FR", "DE"], "connections_created": 1,
                                                    "connections_extended": 0, "duplicate_connections": 0,
                                                    "duplicate_addresses": 0})
    out = render(body)
    assert "Plan: 1 to create, 0 to update, 0 to archive, 3 inbound addresses to add. 0 orphans" in out
    assert "Applied: 1 created, 0 updated, 0 archived, 3 inbound addresses added; 0 conflicts." in out
    assert 'Inbound: countries=["FR","DE"] connections_created=1 connections_extended=0' in out


def test_render_report_is_usable_on_its_own():
    text = render_report(report(mode="dry-run"))
    assert "Plan: 2 to create" in text and text.startswith("\n")


def test_colors_only_when_asked():
    plain_out = render(report(), event("tenant.created", tenant_id="a", name="A", plan="DEV", status="TRIAL"))
    assert "\x1b[" not in plain_out
    colored = ConsoleRenderer(colors=True)(None, "info", event("tenant.created", tenant_id="a", name="A",
                                                                 plan="DEV", status="TRIAL"))
    assert "\x1b[32m" in colored and re.sub(r"\x1b\[[0-9;]*m", "", colored).startswith("+ create   a ")


# -- table ------------------------------------------------------------------------------------------------

def test_table_aligns_columns_in_plain_ascii():
    out = table(["id", "error", "detail"], [["kbz-009", "invalid_plan", "plan 'gold' has no mapping"],
                                            ["a", None, 12]])
    assert out == "\n".join([
        "id      | error        | detail",
        "--------+--------------+---------------------------",
        "kbz-009 | invalid_plan | plan 'gold' has no mapping",
        "a       | -            | 12",
    ])
    assert out.isascii()


def test_table_counts_wide_glyphs_as_two_columns_and_escapes_newlines():
    out = table(["name", "x"], [["東京", "1"], ["ab", "2"], ["a\nb", "3"]])
    assert out.splitlines() == ["name | x", "-----+--", "東京 | 1", "ab   | 2", "a\\nb | 3"]


# -- status and sync -----------------------------------------------------------------------------------

STATUS = {
    "tenantId": "kbz-002",
    "product": {"exists": True, "name": "KeyBuzz Pro", "plan": "pro", "status": "active"},
    "marketplace": {"exists": True, "name": "KeyBuzz Pro", "plan": "STARTER", "status": "ACTIVE"},
    "inSync": False,
    "inboundAddresses": [{"marketplace": "amazon", "country": "FR",
                          "email": "amazon.kbz-002.fr.ab12cd@inbound.keybuzz.io", "status": "VALIDATED"}],
    "marketplaceConnections": [],
    "differences": [{"field": "plan", "product": "PRO", "marketplace": "STARTER"}],
}


def test_status_renders_both_sides_and_the_differences_as_tables():
    out = render_status(STATUS)
    assert out == "\n".join([
        "Tenant kbz-002: not in sync",
        "",
        "field  | product     | marketplace",
        "-------+-------------+------------",
        "exists | yes         | yes",
        "name   | KeyBuzz Pro | KeyBuzz Pro",
        "plan   | pro         | STARTER",
        "status | active      | ACTIVE",
        "",
        "Differences (what a run would write):",
        "field | product | marketplace",
        "------+---------+------------",
        "plan  | PRO     | STARTER",
        "",
        "Inbound addresses:",
        "marketplace | country | email                                       | status",
        "------------+---------+---------------------------------------------+----------",
        "amazon      | FR      | amazon.kbz-002.fr.ab12cd@inbound.keybuzz.io | VALIDATED",
        "",
        "Marketplace connections: none",
    ])


def test_status_of_a_tenant_missing_on_one_side():
    body = {**STATUS, "marketplace": {"exists": False, "name": None, "plan": None, "status": None},
            "inboundAddresses": [], "marketplaceConnections": [],
            "differences": [{"field": "exists", "product": True, "marketplace": False}]}
    out = render_status(body)
    assert "exists | yes         | no" in out and "name   | KeyBuzz Pro | -" in out
    assert "exists | yes     | no" in out
    assert_no_repr(out)


def test_sync_answers_render_as_a_short_block():
    ok = {"success": True, "tenant": {"id": "kbz-003", "name": "KeyBuzz Labs", "plan": "DEV", "status": "TRIAL"},
          "inboundAddress": "amazon.kbz-003.fr.ab12cd@inbound.keybuzz.io"}
    assert render_sync(ok) == "\n".join([
        "Sync: success",
        'Tenant: kbz-003  "KeyBuzz Labs"  DEV/TRIAL',
        "Inbound address: amazon.kbz-003.fr.ab12cd@inbound.keybuzz.io",
    ])
    assert render_sync({"success": False, "error": "Tenant not found in product DB"}) == \
        "Sync: failed\nError: Tenant not found in product DB"
    partial = {"success": False, "tenant": None, "inboundAddress": None, "error": "invalid_plan: plan 'gold'"}
    assert render_sync(partial) == "\n".join([
        "Sync: failed", "Tenant: not in the marketplace", "Inbound address: none", "Error: invalid_plan: plan 'gold'"])


# -- the real CLI ----------------------------------------------------------------------------------------

def demo_tenants(dbs) -> None:
    dbs.add_product(("kbz-001", "KeyBuzz", "starter", "active"), ("kbz-002", "KeyBuzz Pro", "pro", "active"),
                    ("kbz-003", "KeyBuzz Labs", "dev", "trial"), ("kbz-005", "Old", "starter", "archived"))
    dbs.add_market(("kbz-001", "KeyBuzz", "STARTER", "ACTIVE"), ("kbz-002", "KeyBuzz Pro", "STARTER", "ACTIVE"),
                   ("kbz-005", "Old", "STARTER", "ACTIVE"), ("legacy-009", "Legacy", "PRO", "ACTIVE"))


def test_cli_plan_renders_the_plan_for_people(dbs):
    demo_tenants(dbs)
    result = run_cli("plan", "--log-format", "console", env=dbs.env())
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"\d\d:\d\d:\d\d reconcile\.start  run_id=[0-9a-f]{32} mode=dry-run shard=0/1 .*", lines[0])
    # What a create would write is shown as the applied run shows it, though nothing is announced.
    assert '+ create   kbz-003           "KeyBuzz Labs"  DEV/TRIAL' in lines and "- archive  kbz-005" in lines
    assert "~ update   kbz-002           plan STARTER -> PRO" in lines
    assert "* orphan   legacy-009        (reported)" in lines
    assert "Plan: 1 to create, 1 to update, 1 to archive. 1 orphan (reported), 0 row errors, 0 skipped." in lines
    assert "Dry run: nothing written." in lines
    assert re.fullmatch(r"Status: success · \d+\.\d s · exit 0", lines[-1])
    assert_no_repr(result.stdout)
    assert "kbz-003" not in dbs.market()


def test_cli_run_renders_sentences_then_the_summary(dbs):
    demo_tenants(dbs)
    dbs.add_product(("kbz-009", "Bad", "gold", "active"))
    result = run_cli("run", "--log-format", "console", env=dbs.env())
    assert result.code == 3, result.stderr
    lines = result.stdout.splitlines()
    assert '+ create   kbz-003           "KeyBuzz Labs"  DEV/TRIAL' in lines
    assert "~ update   kbz-002           plan STARTER -> PRO" in lines
    assert "- archive  kbz-005" in lines
    assert any(re.fullmatch(r"! error    kbz-009           invalid_plan: .*gold.*", line) for line in lines)
    assert "Plan: 1 to create, 1 to update, 1 to archive. 1 orphan (reported), 1 row error, 0 skipped." in lines
    assert "Applied: 1 created, 1 updated, 1 archived; 0 conflicts." in lines
    assert "Row errors:" in lines and any(line.startswith("kbz-009 | invalid_plan |") for line in lines)
    assert re.fullmatch(r"Status: partial · \d+\.\d s · exit 3", lines[-1])
    assert_no_repr(result.stdout)
    assert dbs.market()["kbz-003"]["plan"] == "DEV"


def test_cli_locked_run_renders_the_holder(dbs):
    from reconcile.db.lock import lock_key
    from reconcile.shard import Shard

    dbs.add_product(("a", "A", "pro", "active"))
    with dbs.engine("marketplace").connect() as holder:
        holder.exec_driver_sql("SET application_name = 'someone else'")
        holder.exec_driver_sql("SELECT pg_advisory_lock(%s)", (lock_key(Shard()),))
        result = run_cli("run", "--log-format", "console", env=dbs.env())
        holder.exec_driver_sql("SELECT pg_advisory_unlock_all()")
    assert result.code == 6
    assert re.search(r"^Status: locked · \d+\.\d s · exit 6$", result.stdout, re.M)
    assert re.search(r'^Lock holder: pid=\d+ application_name="someone else" client_addr=\S+ since=\d{4}-',
                     result.stdout, re.M)
    assert_no_repr(result.stdout)


def test_cli_status_renders_tables(dbs):
    dbs.add_product(("kbz-002", "KeyBuzz Pro", "pro", "active"))
    dbs.add_market(("kbz-002", "KeyBuzz Pro", "STARTER", "ACTIVE"))
    result = run_cli("status", "kbz-002", "--log-format", "console", env=dbs.env())
    assert result.code == 0, result.stderr
    out = result.stdout
    assert out.startswith("Tenant kbz-002: not in sync\n")
    assert "plan   | pro         | STARTER" in out
    assert "plan  | PRO     | STARTER" in out
    assert "Inbound addresses: none" in out and "Marketplace connections: none" in out
    assert "{" not in out
    assert_no_repr(out)


def test_cli_status_json_is_unchanged_by_default(dbs):
    dbs.add_product(("kbz-002", "KeyBuzz Pro", "pro", "active"))
    result = run_cli("status", "kbz-002", env=dbs.env())
    assert json.loads(result.stdout)["tenantId"] == "kbz-002"


def test_cli_sync_renders_its_answer_for_people(dbs):
    dbs.add_product(("kbz-003", "KeyBuzz Labs", "dev", "trial"))
    result = run_cli("sync", "kbz-003", "--log-format", "console", env=dbs.env())
    assert result.code == 0, result.stderr
    tail = result.stdout.splitlines()[-3:]
    assert tail[:2] == ["Sync: success", 'Tenant: kbz-003  "KeyBuzz Labs"  DEV/TRIAL']
    assert re.fullmatch(r"Inbound address: amazon\.kbz-003\.fr\.[a-z0-9]{6}@inbound\.keybuzz\.io", tail[2])
    assert re.search(r"^@ inbound  kbz-003           FR  amazon\.kbz-003\.fr\.", result.stdout, re.M)
    assert_no_repr(result.stdout)
    missing = run_cli("sync", "ghost", "--log-format", "console", env=dbs.env())
    assert missing.code == 4 and missing.stdout == "Sync: failed\nError: Tenant not found in product DB\n"


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_cli_colors_on_a_terminal_only(dbs):
    dbs.add_product(("a", "A", "pro", "active"))
    leader, follower = pty.openpty()
    env = {k: v for k, v in dbs.env().items() if k != "NO_COLOR"}
    proc = subprocess.Popen([sys.executable, "-m", "jobs", "plan", "--log-format", "console"], stdout=follower,
                            stderr=subprocess.PIPE, env=env, cwd=REPO)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    shown = b"".join(chunks).decode()
    assert "\x1b[" in shown and "Plan: 1 to create" in re.sub(r"\x1b\[[0-9;]*m", "", shown)
    piped = run_cli("plan", "--log-format", "console", env=dbs.env())
    assert "\x1b[" not in piped.stdout


def test_cli_console_output_closed_early_keeps_the_runs_exit_code(dbs, tmp_path):
    dbs.add_product(*((f"t{i:05d}", f"Tenant {i}", "pro", "active") for i in range(2000)))
    stderr_file = tmp_path / "stderr.txt"
    with stderr_file.open("wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "jobs", "run", "--log-format", "console",
                                 "--report-file", str(tmp_path / "report.json")],
                                env=dbs.env(), cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=stderr)
        assert proc.stdout is not None
        head = proc.stdout.read(200)  # like `| head -c 200`
        proc.stdout.close()
        code = proc.wait(timeout=60)
    assert re.match(rb"\d\d:\d\d:\d\d reconcile\.start ", head), head
    assert code == 0, stderr_file.read_text()
    assert "Traceback" not in stderr_file.read_text()
    assert json.loads((tmp_path / "report.json").read_text())["counts"]["created"] == 2000


# -- one table of kinds and one of exit codes ----------------------------------------------------------

def test_sentences_take_their_symbols_from_the_action_kinds_and_exit_codes_from_the_report_model():
    from reconcile.actions import KINDS
    from reconcile.report.console import exit_code, sentence
    from reconcile.report.model import FAILED, STATUS_EXIT_CODES

    symbolized = [kind for kind in KINDS if kind.symbol]
    assert {kind.name for kind in symbolized} == {"create", "update", "archive", "error", "orphan"}
    for kind in symbolized:
        assert sentence(kind.name, "t").startswith(f"{kind.symbol} {kind.name}"), kind.name
    for status, code in STATUS_EXIT_CODES.items():
        assert exit_code({"status": status}) == code, status
    assert exit_code({"status": FAILED, "exit_code": 2}) == 2


@pytest.mark.parametrize("fmt", ["json", "ecs"])
def test_what_only_the_console_shows_never_reaches_json_or_ecs(dbs, fmt):
    demo_tenants(dbs)
    result = run_cli("plan", "--log-format", fmt, env=dbs.env())
    assert result.code == 0, result.stderr
    assert "_for_people" not in result.stdout and "KeyBuzz Labs" not in result.stdout
