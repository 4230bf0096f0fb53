"""The diff: a pure merge-join of two id-sorted streams of COPY lines into a lazy stream of actions.

Product lines are already in marketplace terms (`id, name, plan, status, error`, see
`Mapping.product_select_sql`); marketplace lines are `id, name, plan, status, ''`. A valid tenant
that is in sync therefore has byte-identical lines on both sides, and the loop settles the common
case with one comparison; only differing lines are split into fields.

Actions are small tuples; statistics are derived from the stream by whoever consumes it:
    (UNCHANGED, n)              n tenants that need nothing (run-length, never one tuple per row)
    (CREATE, p)                 p: product fields (escaped bytes)
    (UPDATE, p, m)              m: marketplace fields as read
    (ARCHIVE, p, m)
    (ORPHAN, m)
    (ERROR, p, in_marketplace)  p[4] holds the error code
    (SKIP, fields)              a tenant on the skip list (product fields, or marketplace fields of
                                an orphan): left untouched
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final

from reconcile import actions
from reconcile.copytext import unescape
from reconcile.mapping import ARCHIVED_MARK, CLOSED, SKIPPED

UNCHANGED: Final = actions.UNCHANGED.name
CREATE: Final = actions.CREATE.name
UPDATE: Final = actions.UPDATE.name
ARCHIVE: Final = actions.ARCHIVE.name
ORPHAN: Final = actions.ORPHAN.name
ERROR: Final = actions.ERROR.name
SKIP: Final = actions.SKIP.name

Fields = list[bytes]
Action = tuple

_ARCHIVED = ARCHIVED_MARK.encode()
_CLOSED = CLOSED.encode()
_SKIPPED = SKIPPED.encode()
# Both snapshots' line layout; ERR is the verdict column: '' valid, a row error code, or SKIPPED.
ID, NAME, PLAN, STATUS, ERR = range(5)


class UnsortedInput(Exception):
    """A stream was not sorted by id bytewise; diffing it would invent creates and orphans."""


def _key(escaped_id: bytes) -> bytes:
    return unescape(escaped_id) if b"\\" in escaped_id else escaped_id


def _product_only(p: Fields) -> Action | None:
    if p[ERR]:
        return (SKIP, p) if p[ERR] == _SKIPPED else (ERROR, p, False)
    if p[STATUS] == _ARCHIVED:
        return None  # archived and absent: nothing to do
    return (CREATE, p)


def _both(p: Fields, m: Fields) -> Action | None:
    if p[ERR]:
        return (SKIP, p) if p[ERR] == _SKIPPED else (ERROR, p, True)
    if p[STATUS] == _ARCHIVED:
        return (ARCHIVE, p, m) if m[STATUS] != _CLOSED else None
    return (UPDATE, p, m)


def _orphan(m: Fields, skip: frozenset[bytes]) -> Action:
    return (SKIP, m) if skip and _key(m[ID]) in skip else (ORPHAN, m)


def diff(product: Iterable[bytes], marketplace: Iterable[bytes],
         skip: frozenset[bytes] = frozenset()) -> Iterator[Action]:
    """Merge-join two streams of COPY lines, each sorted by id bytewise (`COLLATE "C"`). Product
    tenants on the skip list arrive marked by the snapshot query; `skip` (UTF-8 ids) catches the
    orphans among them."""
    pit = iter(product)
    mit = iter(marketplace)
    p = next(pit, None)
    m = next(mit, None)
    run = 0
    last_p = last_m = b""
    while p is not None and m is not None:
        if p == m:  # valid and in sync: the common case, settled without splitting the lines
            run += 1
            p = next(pit, None)
            m = next(mit, None)
            continue
        pf = p[:-1].split(b"\t")
        mf = m[:-1].split(b"\t")
        pkey = _key(pf[ID])
        mkey = _key(mf[ID])
        if pkey < last_p or mkey < last_m:
            raise UnsortedInput("snapshot rows are not sorted by id")
        last_p, last_m = pkey, mkey
        if pkey == mkey:
            action = _both(pf, mf)
            p = next(pit, None)
            m = next(mit, None)
        elif pkey < mkey:
            action = _product_only(pf)
            p = next(pit, None)
        else:
            action = _orphan(mf, skip)
            m = next(mit, None)
        if action is None:
            run += 1
            continue
        if run:
            yield (UNCHANGED, run)
            run = 0
        yield action
    yield from _rest(p, pit, m, mit, run, skip)


def _rest(p: bytes | None, pit: Iterator[bytes], m: bytes | None, mit: Iterator[bytes], run: int,
          skip: frozenset[bytes]) -> Iterator[Action]:
    """Once one stream is exhausted: the remaining product lines, then the remaining orphans."""
    while p is not None:
        action = _product_only(p[:-1].split(b"\t"))
        if action is None:
            run += 1
        else:
            if run:
                yield (UNCHANGED, run)
                run = 0
            yield action
        p = next(pit, None)
    if run:
        yield (UNCHANGED, run)
    while m is not None:
        yield _orphan(m[:-1].split(b"\t"), skip)
        m = next(mit, None)
