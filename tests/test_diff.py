"""The action table, on the pure diff (no database), plus a property test against a dict model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconcile import actions, copytext
from reconcile.mapping import ARCHIVED_MARK, INVALID_PLAN, Mapping
from reconcile.pipeline.diff import ARCHIVE, CREATE, ERROR, ORPHAN, UNCHANGED, UPDATE, UnsortedInput, diff
from reconcile.pipeline.plan import build_plan

MAPPING = Mapping()


def p_line(tenant_id: str, name: str = "N", plan: str | None = "pro", status: str | None = "active") -> bytes:
    row = MAPPING.normalize(tenant_id, name, plan, status)
    return copytext.line_of([row.id, row.name, row.plan, row.status, row.error])


def m_line(tenant_id: str, name: str = "N", plan: str = "PRO", status: str = "ACTIVE") -> bytes:
    return copytext.line_of([tenant_id, name, plan, status, ""])


def kinds(product: list[bytes], market: list[bytes]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for action in diff(product, market):
        kind = action[0]
        if kind == UNCHANGED:
            out.setdefault(kind, []).append(str(action[1]))
            continue
        fields = action[1]
        out.setdefault(kind, []).append(copytext.decode(fields[0]))
    return out


def test_product_not_archived_and_absent_is_created():
    assert kinds([p_line("a")], []) == {CREATE: ["a"]}


def test_present_and_equal_is_unchanged_as_one_run_length_tuple():
    assert list(diff([p_line("a"), p_line("b")], [m_line("a"), m_line("b")])) == [(UNCHANGED, 2)]


@pytest.mark.parametrize("market", [m_line("a", name="Old"), m_line("a", plan="DEV"),
                                    m_line("a", status="TRIAL"), m_line("a", status="CLOSED")])
def test_present_with_a_differing_mapped_field_is_updated(market):
    assert kinds([p_line("a", name="N")], [market]) == {UPDATE: ["a"]}


def test_archived_and_present_not_closed_is_archived():
    assert kinds([p_line("a", status="archived")], [m_line("a", status="SUSPENDED")]) == {ARCHIVE: ["a"]}


def test_archived_and_absent_or_closed_needs_nothing():
    assert list(diff([p_line("a", status="archived")], [])) == [(UNCHANGED, 1)]
    assert list(diff([p_line("a", status=" Archived ")], [m_line("a", status="CLOSED", name="x")])) == [
        (UNCHANGED, 1)]


def test_absent_from_product_is_an_orphan():
    assert kinds([], [m_line("z")]) == {ORPHAN: ["z"]}
    assert kinds([p_line("b")], [m_line("a"), m_line("b"), m_line("c")]) == {
        ORPHAN: ["a", "c"], UNCHANGED: ["1"]}


def test_row_error_is_reported_not_acted_on_and_not_an_orphan():
    actions = list(diff([p_line("a", plan="gold")], [m_line("a")]))
    assert [a[0] for a in actions] == [ERROR]
    assert actions[0][1][4] == INVALID_PLAN.encode()
    assert actions[0][2] is True  # present in the marketplace


def test_ids_are_compared_exactly_not_case_folded():
    assert kinds([p_line("ABC")], [m_line("abc")]) == {CREATE: ["ABC"], ORPHAN: ["abc"]}


def test_ids_with_copy_escapes_sort_and_match_by_their_real_bytes():
    # "\t" sorts before "!" as a real byte, after it once escaped as "\\t".
    product = [p_line("a\tb"), p_line("a!")]
    market = [m_line("a\tb", name="old"), m_line("a!")]
    assert kinds(product, market) == {UPDATE: ["a\tb"], UNCHANGED: ["1"]}


def test_unsorted_input_is_refused_rather_than_guessed():
    with pytest.raises(UnsortedInput):
        list(diff([p_line("b", name="x"), p_line("a", name="x")], [m_line("b"), m_line("a")]))


def test_plan_counts_are_derived_from_the_stream():
    product = [p_line("a"), p_line("b", plan="dev"), p_line("c", status="archived"), p_line("d", plan="??"),
               p_line("e")]
    market = [m_line("a"), m_line("b"), m_line("c"), m_line("e"), m_line("x")]
    plan = build_plan(diff(product, market), orphans_mode="archive")
    assert (plan.count(actions.CREATE), plan.count(actions.UPDATE), plan.count(actions.ARCHIVE),
            plan.count(actions.ERROR)) == (0, 1, 2, 1)
    orphan_ids = [row[0].decode() for row in plan.spool(actions.ORPHAN).rows()]
    assert plan.unchanged == 2 and plan.count(actions.ORPHAN) == 1 and orphan_ids == ["x"]
    archived = [row[0] for row in plan.spool(actions.ARCHIVE).rows()]
    assert archived == [b"c", b"x"]


def test_orphans_already_closed_are_not_archived_again():
    plan = build_plan(diff([], [m_line("x", status="CLOSED")]), orphans_mode="archive")
    assert plan.count(actions.ORPHAN) == 1 and plan.count(actions.ARCHIVE) == 0


# -- property: the merge-join agrees with a plain dict model --------------------------------------

_id_chars = st.sampled_from(list("ab_-Z9\t\\é\n "))
_ids = st.text(_id_chars, min_size=1, max_size=4)
_values = st.sampled_from([None, "", "pro", " DEV ", "starter", "gold", "active", "archived", "closed",
                           "trial", "bogus"])
_names = st.sampled_from(["N", "M", "  ", "x\ty"])


@st.composite
def _snapshots(draw):
    ids = draw(st.lists(_ids, unique=True, max_size=25))
    product = {}
    market = {}
    for tenant_id in ids:
        where = draw(st.sampled_from(["both", "product", "market"]))
        if where in ("both", "product"):
            product[tenant_id] = (draw(_names), draw(_values), draw(_values))
        if where in ("both", "market"):
            market[tenant_id] = (draw(_names), draw(st.sampled_from(["DEV", "PRO", "STARTER"])),
                                 draw(st.sampled_from(["ACTIVE", "TRIAL", "CLOSED"])))
    return product, market


def _model(product, market):
    expected: dict[str, set[str]] = {CREATE: set(), UPDATE: set(), ARCHIVE: set(), ORPHAN: set(), ERROR: set()}
    unchanged = 0
    for tenant_id, (name, plan, status) in product.items():
        row = MAPPING.normalize(tenant_id, name, plan, status)
        have = market.get(tenant_id)
        if row.error:
            expected[ERROR].add(tenant_id)
        elif row.status == ARCHIVED_MARK:
            if have is not None and have[2] != "CLOSED":
                expected[ARCHIVE].add(tenant_id)
            else:
                unchanged += 1
        elif have is None:
            expected[CREATE].add(tenant_id)
        elif (row.name, row.plan, row.status) != have:
            expected[UPDATE].add(tenant_id)
        else:
            unchanged += 1
    expected[ORPHAN] = set(market) - set(product)
    return expected, unchanged


def _sorted(ids):
    return sorted(ids, key=lambda i: i.encode())


@settings(max_examples=300, deadline=None)
@given(_snapshots())
def test_merge_join_matches_dict_model(snapshots):
    product, market = snapshots
    product_lines = [p_line(i, *product[i]) for i in _sorted(product)]
    market_lines = [m_line(i, *market[i]) for i in _sorted(market)]
    got: dict[str, set[str]] = {CREATE: set(), UPDATE: set(), ARCHIVE: set(), ORPHAN: set(), ERROR: set()}
    unchanged = 0
    for action in diff(product_lines, market_lines):
        if action[0] == UNCHANGED:
            unchanged += action[1]
        else:
            got[action[0]].add(copytext.decode(action[1][0]))
    assert (got, unchanged) == _model(product, market)
