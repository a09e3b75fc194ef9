"""Keyset paging, newest first: the one way every list here is cut into pages.

A page is the `limit` rows that come after an anchor in (timestamp, id) order, newest first,
asked for with `limit + 1` so the extra row says whether there is more. No OFFSET: a page deep
in 200k rows costs the same as the first, and a row added while someone pages never shifts
the rows they have not seen yet. The id breaks ties between rows with the same timestamp.

The API names its anchor by id (`starting_after=<id>`, `anchor_of` finds its keys); the
dashboard carries the keys themselves in an opaque cursor (`encode_cursor`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Row, Select, select, tuple_
from sqlalchemy.orm import QueryableAttribute, Session

T = TypeVar("T")
K = TypeVar("K", int, str)
AnySelect = Select[*tuple[Any, ...]]
AnyRow = Row[*tuple[Any, ...]]
Key = ColumnElement[Any] | QueryableAttribute[Any]


class UnknownAnchor(LookupError):
    """The anchor names no row (a mistyped or foreign id): the caller's mistake, a 400."""


class BadCursor(ValueError):
    """A cursor that this code did not write."""


@dataclass(frozen=True)
class Slice(Generic[T]):
    rows: list[T]
    has_more: bool


def anchor_of(session: Session, keys: Sequence[Key], key: object) -> tuple[Any, ...]:
    """The sort keys of the row whose id (the last of `keys`) is `key`, else UnknownAnchor."""
    found = session.execute(select(*keys).where(keys[-1] == key)).first()
    if found is None:
        raise UnknownAnchor(str(key))
    return tuple(found)


def newest_first(
    session: Session,
    query: AnySelect,
    keys: Sequence[Key],
    *,
    after: Sequence[Any] | None,
    limit: int,
    row: Callable[[AnyRow], T],
) -> Slice[T]:
    """One page of `query`, ordered by `keys` descending (e.g. (opened_at, id)), starting
    after the row whose keys are `after` (None: the first page). `row` turns each result row
    into what the page holds."""
    if after is not None:
        if len(keys) == 1:
            query = query.where(keys[0] < after[0])
        else:
            # A row-value comparison: PostgreSQL and SQLite both turn it into one index range.
            query = query.where(tuple_(*keys) < tuple_(*after))
    query = query.order_by(None).order_by(*(k.desc() for k in keys)).limit(limit + 1)
    found = session.execute(query).all()
    return Slice([row(r) for r in found[:limit]], len(found) > limit)


def encode_cursor(at: datetime, key: int | str) -> str:
    """An opaque, URL-safe cursor for the keys (at, key) of the last row of a page."""
    raw = f"{int(at.timestamp() * 1_000_000)}:{key}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(value: str, key_type: Callable[[str], K]) -> tuple[datetime, K]:
    """The keys an `encode_cursor` cursor carries, else BadCursor."""
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        micros, key = raw.split(":", 1)
        return datetime.fromtimestamp(int(micros) / 1_000_000, UTC), key_type(key)
    except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError, OSError):
        raise BadCursor(value) from None
