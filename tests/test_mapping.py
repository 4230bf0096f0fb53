"""Mapping rules: Python evaluator, config tables merged over the defaults, and the SQL evaluator agreeing."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconcile import copytext
from reconcile.errors import ConfigError
from reconcile.mapping import (
    ARCHIVED_MARK,
    INVALID_ID,
    INVALID_NAME,
    INVALID_PLAN,
    INVALID_STATUS,
    Mapping,
    slug_for,
)

M = Mapping()


@pytest.mark.parametrize(("raw", "expected"), [
    ("dev", "DEV"), ("starter", "STARTER"), ("pro", "PRO"), ("enterprise", "ENTERPRISE"),
    (" Pro ", "PRO"), ("ENTERPRISE", "ENTERPRISE"), ("\tstarter\n", "STARTER"),
    (None, "DEV"), ("", "DEV"), ("   ", "DEV"),
])
def test_plan_mapping_trims_ignores_case_and_defaults_to_dev(raw, expected):
    assert M.map_plan(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    ("trial", "TRIAL"), ("active", "ACTIVE"), ("suspended", "SUSPENDED"), ("closed", "CLOSED"),
    (" Active", "ACTIVE"), (None, "ACTIVE"), ("", "ACTIVE"), ("archived", ARCHIVED_MARK),
    ("ARCHIVED ", ARCHIVED_MARK),
])
def test_status_mapping_trims_ignores_case_defaults_to_active_and_marks_archived(raw, expected):
    assert M.map_status(raw) == expected


@pytest.mark.parametrize(("row", "error"), [
    (("a", "N", "gold", "active"), INVALID_PLAN),
    (("a", "N", "pro", "deleted"), INVALID_STATUS),
    (("a", "   ", "pro", "active"), INVALID_NAME),
    (("a", "x" * 256, "pro", "active"), INVALID_NAME),
    (("", "N", "pro", "active"), INVALID_ID),
    (("i" * 129, "N", "pro", "active"), INVALID_ID),
    (("i" * 128, "n" * 255, "pro", "active"), ""),
    (("a", "N", "gold", "deleted"), INVALID_PLAN),  # the first problem found is reported
])
def test_row_errors(row, error):
    assert M.normalize(*row).error == error


def test_invalid_values_keep_the_raw_text_for_the_report():
    row = M.normalize("a", "N", " Gold ", "active")
    assert (row.plan, row.error) == (" Gold ", INVALID_PLAN)


def test_slug_replaces_underscores_and_lowercases():
    assert slug_for("Tenant_Test_DEV") == "tenant-test-dev"


def test_config_tables_merge_over_the_default_tables():
    # A table overrides or adds entries; the defaults it does not name stay (it used to replace the
    # whole default table, which silently turned every unlisted plan into a row error).
    mapping = Mapping.from_config({"plan": {"Business": "ENTERPRISE", "dev": "STARTER"}, "plan_when_empty": "STARTER"})
    assert mapping.map_plan("business") == "ENTERPRISE"   # added
    assert mapping.map_plan("dev") == "STARTER"           # overridden
    assert mapping.map_plan("pro") == "PRO"               # kept from the defaults
    assert mapping.map_plan(None) == "STARTER"
    assert mapping.status == M.status                     # no [mapping.status]: the defaults
    status = Mapping.from_config({"status": {"deleted": "ARCHIVED", "paused": "SUSPENDED"}})
    assert (status.map_status("deleted"), status.map_status("paused"), status.map_status("trial")) == (
        ARCHIVED_MARK, "SUSPENDED", "TRIAL")


def test_replace_defaults_uses_only_the_given_tables():
    mapping = Mapping.from_config({"replace_defaults": True, "plan": {"gold": "ENTERPRISE"}})
    assert mapping.plan == {"gold": "ENTERPRISE"}
    assert mapping.map_plan("pro") is None
    assert mapping.status == {}  # replaced whole, and not given: every non-empty status is a row error
    assert mapping.map_status(None) == "ACTIVE"
    assert Mapping.from_config({"replace_defaults": False, "plan": {"gold": "PRO"}}).map_plan("pro") == "PRO"
    with pytest.raises(ConfigError, match=r"mapping\.replace_defaults must be true or false"):
        Mapping.from_config({"replace_defaults": "yes"})


def test_an_empty_override_table_changes_nothing():
    assert Mapping.from_config({"plan": {}, "status": {}}) == M


def test_targets_are_any_label_checked_later_against_the_database():
    mapping = Mapping.from_config({"plan": {"business": "BUSINESS"}, "status": {"frozen": "Frozen Solid"},
                                   "plan_when_empty": "FREE"})
    assert (mapping.map_plan("business"), mapping.map_status("frozen"), mapping.map_plan("")) == (
        "BUSINESS", "Frozen Solid", "FREE")


@pytest.mark.parametrize("target", ["", " PRO", "PRO ", "\tPRO", 3, True, ["PRO"]])
def test_a_target_must_be_a_non_empty_string_without_surrounding_whitespace(target):
    with pytest.raises(ConfigError, match=r"mapping\.plan\.gold must be a marketplace label"):
        Mapping.from_config({"plan": {"gold": target}})
    with pytest.raises(ConfigError, match=r"mapping\.status_when_empty must be a marketplace label"):
        Mapping.from_config({"status_when_empty": target})


def test_archived_keeps_its_meaning_for_status_only():
    assert Mapping.from_config({"status_when_empty": "ARCHIVED"}).map_status(None) == ARCHIVED_MARK
    assert Mapping.from_config({"plan": {"old": "ARCHIVED"}}).map_plan("old") == "ARCHIVED"  # just a label


def test_keys_equal_once_trimmed_and_case_folded_are_an_error():
    with pytest.raises(ConfigError, match=r"mapping\.plan has both 'Gold' and 'gold '"):
        Mapping.from_config({"plan": {"Gold": "PRO", "gold ": "DEV"}})


def test_mapping_config_errors():
    with pytest.raises(ConfigError, match=r"mapping\.flavour is not a known setting"):
        Mapping.from_config({"flavour": {}})
    with pytest.raises(ConfigError, match=r"mapping\.plan has an empty key"):
        Mapping.from_config({"plan": {" ": "PRO"}})
    with pytest.raises(ConfigError, match=r"mapping\.status must be a table"):
        Mapping.from_config({"status": "ACTIVE"})


# -- the SQL evaluator used by the snapshot must agree with the Python one -------------------------

_raw = st.one_of(st.none(), st.sampled_from(["dev", " PRO", "starter\t", "Enterprise", "", "  ", "gold", "trial",
                                             "ACTIVE", "suspended", "closed", " archived", "deleted", "ünï"]))
_name = st.one_of(st.sampled_from(["", " ", "\t\n", "\x0b\x0c", "\r", "ok", " x ", "\x0cy", "Ä" * 255, "Ä" * 256]),
                  st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8))
_tenant_id = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(_tenant_id, _name, _raw, _raw), max_size=12, unique_by=lambda r: r[0]))
def test_snapshot_sql_maps_rows_exactly_like_python(dbs, rows):
    custom = Mapping.from_config({"replace_defaults": True,
                                  "plan": {"dev": "DEV", "pro": "PRO", "gold": "ENTERPRISE"},
                                  "status": {"active": "ACTIVE", "archived": "ARCHIVED", "closed": "CLOSED"},
                                  "status_when_empty": "TRIAL"})
    with dbs.engine("product").begin() as conn:
        conn.exec_driver_sql("TRUNCATE tenants")
        if rows:
            conn.execute(sa.text("INSERT INTO tenants (id, name, plan, status) VALUES (:i, :n, :p, :s)"),
                         [{"i": r[0], "n": r[1], "p": r[2], "s": r[3]} for r in rows])
        for mapping in (M, custom):
            got = [tuple(r) for r in conn.exec_driver_sql(*mapping.product_select_sql())]
            want = sorted((tuple(vars(mapping.normalize(*r)).values()) for r in rows),
                          key=lambda r: r[0].encode())
            assert got == want


def test_snapshot_sql_escapes_quotes_in_configured_values(dbs):
    mapping = Mapping.from_config({"plan": {"o'neil": "PRO"}})
    dbs.add_product(("a", "N", "O'Neil", None))
    with dbs.engine("product").connect() as conn:
        rows = list(conn.exec_driver_sql(*mapping.product_select_sql()))
    assert [tuple(r) for r in rows] == [("a", "N", "PRO", "ACTIVE", "")]
    assert copytext.line_of(rows[0]) == b"a\tN\tPRO\tACTIVE\t\n"
