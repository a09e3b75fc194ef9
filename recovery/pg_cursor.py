"""psycopg's cursor with a `description` that builds its columns only when they are read.

SQLAlchemy reads `cursor.description` after every statement, but for a statement it compiled
before it only checks that there is one (the result's columns are cached with the compiled
statement); psycopg builds a `Column` per column each time - a row of a case is 30 of them.
That was 5 % of the worker's CPU on the webhook mix (bench/event_processing.py --webhook-mix).
Plugged in with psycopg's documented `cursor_factory` (db.py); the columns read are psycopg's
own, so anything that does read them sees no difference.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

import psycopg
from psycopg.pq import ExecStatus

_TUPLES = (ExecStatus.TUPLES_OK, ExecStatus.SINGLE_TUPLE, ExecStatus.TUPLES_CHUNK)


class LazyDescription(Sequence[psycopg.Column]):
    """The description of one result: its length at once, its columns on first use (while the
    cursor is still on that result, as SQLAlchemy reads them right after the statement)."""

    __slots__ = ("_columns", "_cursor", "_result")

    def __init__(self, cursor: DescribingCursor, result: Any) -> None:
        self._cursor, self._result = cursor, result
        self._columns: list[psycopg.Column] | None = None

    def _load(self) -> list[psycopg.Column]:
        if self._columns is None:
            if self._cursor.pgresult is not self._result:
                raise RuntimeError("a cursor description read after the cursor moved on")
            self._columns = psycopg.Cursor.description.fget(self._cursor) or []  # type: ignore[attr-defined]
        return self._columns

    def __len__(self) -> int:
        return int(self._result.nfields)

    @overload
    def __getitem__(self, index: int) -> psycopg.Column: ...

    @overload
    def __getitem__(self, index: slice) -> list[psycopg.Column]: ...

    def __getitem__(self, index: int | slice) -> psycopg.Column | list[psycopg.Column]:
        return self._load()[index]

    def __iter__(self) -> Iterator[psycopg.Column]:
        return iter(self._load())

    def __eq__(self, other: object) -> bool:
        return list(self) == other

    __hash__ = None  # type: ignore[assignment]


class DescribingCursor(psycopg.Cursor[Any]):
    @property
    def description(self) -> LazyDescription | None:  # type: ignore[override]
        result = self.pgresult
        if result is not None and (result.nfields or result.status in _TUPLES):
            return LazyDescription(self, result)
        return None
