"""Keyset (cursor) pagination for the public lists, so that no read costs more than its page (issue 18).

A list is ordered by indexed columns ending in a unique id. A page's `next_cursor` is an opaque token
naming the list and the sort key of the page's last row; `?cursor=` asks for the rows after that key, a
range scan of the index that costs O(page) however deep the page is. `offset` stays for older clients but
stops at MAX_OFFSET (an offset is read and thrown away row by row), and `total` counts at most
COUNT_CAP rows (`total_exact` says whether the count is exact).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Annotated, Any

from fastapi import Query
from gpuproof.gateway.problems import Problem
from sqlalchemy import ColumnElement, Select, func, select, tuple_
from sqlalchemy.orm import Session

MAX_OFFSET = 10_000
COUNT_CAP = 10_000

CursorQuery = Annotated[str | None, Query(max_length=400, pattern=r"^[A-Za-z0-9_-]+$",
                                          description="`next_cursor` of the previous page: the rows after it")]
OffsetQuery = Annotated[int, Query(ge=0, description=f"rows to skip (at most {MAX_OFFSET}; deeper: `cursor`)")]


def encode(kind: str, key: Sequence[Any]) -> str:
    """The cursor after a row of list `kind` whose sort key is `key` (JSON numbers and strings)."""
    raw = json.dumps([kind, *key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode(kind: str, cursor: str, types: Sequence[type]) -> tuple:
    """The sort key a cursor of list `kind` names; 422 when it is not one (malformed, or another list's).
    `types` are the key's column types, in order (a float column takes an int too)."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        data = None
    if not isinstance(data, list) or len(data) != len(types) + 1 or data[0] != kind:
        raise Problem(422, "Invalid request", f"cursor {cursor[:40]!r} is not a cursor of this list: pass the "
                      "`next_cursor` of its previous page unchanged")
    key = tuple(data[1:])
    for value, kind_of in zip(key, types, strict=True):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) if kind_of is float else \
            isinstance(value, kind_of) and not isinstance(value, bool)
        if ok and isinstance(value, float) and not math.isfinite(value):
            ok = False  # json.loads takes NaN and Infinity
        if ok and isinstance(value, int) and abs(value) >= 2**63:  # no database column holds it (binding fails)
            ok = False
        if not ok:
            raise Problem(422, "Invalid request", f"cursor {cursor[:40]!r} names a {type(value).__name__} where "
                          f"the list sorts by a {kind_of.__name__}")
    return key


def check_offset(offset: int, cursor: str | None) -> None:
    """422 for an offset past MAX_OFFSET, or an offset with a cursor (a cursor already says where to start)."""
    if offset > MAX_OFFSET:
        raise Problem(422, "Invalid request", f"offset must be less than or equal to {MAX_OFFSET}, got {offset}: "
                      "page on with `cursor` (each page's `next_cursor`), which costs the same at any depth")
    if offset and cursor is not None:
        raise Problem(422, "Invalid request", "give `cursor` or `offset`, not both")


def after(columns: Sequence[Any], key: Sequence[Any], descending: bool) -> ColumnElement[bool]:
    """The rows strictly past `key` in the order (columns..., all ascending or all descending): one row-value
    comparison, which an index on the same columns answers with a range scan."""
    row, bound = tuple_(*columns), tuple_(*key)
    return row < bound if descending else row > bound


def capped_total(session: Session, query: Select, key: Any) -> tuple[int, bool]:
    """How many rows `query` selects, counting at most COUNT_CAP + 1 of them by their `key` column alone (an
    index answers it without reading the rows): (the count capped at COUNT_CAP, whether it is exact)."""
    rows = query.with_only_columns(key).order_by(None).limit(COUNT_CAP + 1).subquery()
    counted = session.execute(select(func.count()).select_from(rows)).scalar_one()
    return min(counted, COUNT_CAP), counted <= COUNT_CAP


class Totals:
    """The lists' capped totals, each reused for `ttl` seconds (TOTALS_TTL_S) by every page of the same list
    and filter. Counting reads up to COUNT_CAP + 1 index entries: at 100,000 providers it was half of a
    listing's cost and a quarter of the dashboard's, paid on every page (issue 18). A total may so lag the
    rows by `ttl` seconds (docs/api.md). At most `max_keys` filters are kept (beyond: it starts afresh)."""

    def __init__(self, ttl: float = 5.0, max_keys: int = 1024, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.max_keys, self._clock = ttl, max_keys, clock
        self._kept: dict[Hashable, tuple[float, tuple[int, bool]]] = {}

    def get(self, key: Hashable, session: Session, query: Select, column: Any) -> tuple[int, bool]:
        """capped_total(session, query, column), or the one counted for `key` (the list and its filter)
        less than `ttl` seconds ago."""
        now = self._clock()
        kept = self._kept.get(key)
        if kept is not None and kept[0] > now:
            return kept[1]
        total = capped_total(session, query, column)
        if len(self._kept) >= self.max_keys:
            self._kept = {}
        self._kept[key] = (now + self.ttl, total)
        return total
