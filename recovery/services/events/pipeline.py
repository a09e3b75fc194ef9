"""Several Core statements sent to PostgreSQL in one round trip (psycopg's pipeline mode), in
the caller's transaction.

Why: at 500 webhooks a second the worker's event processing spent about 70 % of its time
waiting for PostgreSQL's replies (py-spy on `recovery worker` during `bench/webhook_ingest.py`),
one round trip per statement, each longer while the web, the load and PostgreSQL share the two
cores. An event whose reactions run writes its mirror rows first - an upsert per table, a
subscription's items, its payment attempts, its invoice links - and none of those statements
needs the reply of another, so they go together and are waited for once.

Each statement is compiled once per set of columns by SQLAlchemy for the engine's dialect (the
same SQL, casts and bind processing - UTC datetimes, JSON - as `session.execute` would send).
psycopg's errors come back as SQLAlchemy's (`DBAPIError.instance`), so a database that went
away is an `OperationalError` to the caller as on any other path.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session


@dataclass(frozen=True)
class Write:
    """One statement, run once per row; `returning`: its rows come back (first column)."""

    statement: Any
    rows: Sequence[dict[str, Any]]
    returning: bool = False


Processors = dict[str, Callable[[Any], Any]]


@functools.cache
def _compiled(statement: Any, dialect: Dialect, keys: tuple[str, ...]) -> tuple[str, Processors]:
    compiled: Any = statement.compile(dialect=dialect, column_keys=list(keys))
    return str(compiled.string), dict(compiled._bind_processors)


def _params(processors: Processors, row: dict[str, Any]) -> dict[str, Any]:
    return {k: (processors[k](v) if k in processors else v) for k, v in row.items()}


def _by_columns(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row)), []).append(row)
    return groups


def send(session: Session, writes: Sequence[Write]) -> list[list[Any]]:
    """Run `writes` in order in one round trip. Returns, per write with `returning`, the first
    column of the rows it returned (in order of the writes)."""
    writes = [w for w in writes if w.rows]
    if not writes:
        return []
    dialect = session.get_bind().dialect
    connection = session.connection()
    raw: psycopg.Connection[Any] = connection.connection.driver_connection  # type: ignore[assignment]
    # Listeners that count or time statements (the benches, tests) see these too.
    listeners: Any = connection.dispatch.before_cursor_execute
    sql = ""
    try:
        with raw.cursor() as plain:
            returning: list[psycopg.Cursor[Any]] = []
            with raw.pipeline():
                for write in writes:
                    cursor = raw.cursor() if write.returning else plain
                    if write.returning:
                        returning.append(cursor)
                    for keys, rows in _by_columns(write.rows).items():
                        sql, processors = _compiled(write.statement, dialect, keys)
                        params = [_params(processors, row) for row in rows]
                        if listeners:
                            listeners(connection, cursor, sql, params, None, len(params) > 1)
                        if write.returning or len(params) > 1:
                            cursor.executemany(sql, params, returning=write.returning)
                        else:
                            cursor.execute(sql, params[0])
            results = []
            for cursor in returning:
                found = []
                for _ in cursor.results():
                    found += [row[0] for row in cursor.fetchall()]
                cursor.close()
                results.append(found)
            return results
    except psycopg.Error as exc:
        raise DBAPIError.instance(sql, None, exc, psycopg.Error) from exc
