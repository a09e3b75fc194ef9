"""Engine, sessions and the column types shared by every model.

One `Database` per process. A unit of work is `with db.transaction() as session:`; it commits
once at the end or rolls back on error - helpers flush, they never commit.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    CursorResult,
    Date,
    DateTime,
    Engine,
    MetaData,
    Text,
    any_,
    bindparam,
    cast,
    create_engine,
    event,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy import column as sql_column
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.orm import DeclarativeBase, PassiveFlag, Session, sessionmaker
from sqlalchemy.orm.attributes import get_history, set_committed_value
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every engine (SQLite has no zones)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else _as_stored(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[str]: JSON(),
    }


READ_ONLY_OPTION = "recovery_read_only"
POOL_RECYCLE_SECONDS = 1800
# Prepared statements each SQLite connection keeps (Python's default: 128). The demo's history
# runs ~700 distinct statements, and at 128 the cache evicted what it would need again.
# https://docs.python.org/3/library/sqlite3.html#sqlite3.connect
SQLITE_CACHED_STATEMENTS = 1024


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy drive transactions; WAL lets readers run beside the one writer.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn: Any) -> None:
        # BEGIN IMMEDIATE takes the write lock up front: a deferred transaction that reads and
        # then writes can fail with "database is locked" instead of waiting its turn. Read-only
        # units of work (Database.reading) begin deferred: under WAL they hold no lock, so a
        # long dashboard query never stalls webhooks and the worker.
        read_only = conn.get_execution_options().get(READ_ONLY_OPTION)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


class Database:
    def __init__(self, url: str, *, echo: bool = False, pool_size: int = 5) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {
                "check_same_thread": False,
                "timeout": 10,
                "cached_statements": SQLITE_CACHED_STATEMENTS,
            }
            kwargs["poolclass"] = NullPool if parsed.database in (None, "", ":memory:") else None
            if kwargs["poolclass"] is None:
                del kwargs["poolclass"]
        else:
            # No ping per checkout (a round trip on every webhook): connections are recycled
            # after half an hour instead, and one that died is a failed statement - a 503 for a
            # webhook, which Stripe retries - after which SQLAlchemy discards every connection
            # older than the failure, so the next checkout connects afresh.
            kwargs.update(pool_size=pool_size, max_overflow=10, pool_recycle=POOL_RECYCLE_SECONDS)
            from recovery.pg_cursor import DescribingCursor

            kwargs["connect_args"] = {"cursor_factory": DescribingCursor}
            kwargs["json_serializer"] = json.dumps
        self.engine = create_engine(url, **kwargs)
        if self.dialect == "sqlite":
            _sqlite_pragmas(self.engine)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        self.read_sessionmaker = sessionmaker(
            self.engine.execution_options(**{READ_ONLY_OPTION: True}), expire_on_commit=False
        )

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        session = self.sessionmaker()
        try:
            with session.begin():
                yield session
        finally:
            session.close()

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A unit of work that only reads (dashboard pages, the API's GETs). Writing in it is a
        bug: on SQLite it would have to upgrade a deferred transaction's lock mid-way."""
        session = self.read_sessionmaker()
        try:
            with session.begin():
                yield session
                if session.new or session.dirty or session.deleted:
                    raise RuntimeError("a read-only unit of work changed objects")
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()


def utcnow_from(ts: int | float | None) -> datetime | None:
    """A Stripe unix timestamp as an aware UTC datetime."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


@functools.cache
def _column_keys(model: Any) -> dict[str, str]:
    """Attribute name -> column name (`metadata_` is stored as `metadata`)."""
    return {prop.key: prop.columns[0].key for prop in inspect(model).column_attrs}


def as_columns(model: Any, values: dict[str, Any]) -> dict[str, Any]:
    keys = _column_keys(model)
    return {keys[name]: value for name, value in values.items()}


def dialect_insert(dialect: str) -> Any:
    """The INSERT construct of the dialect, the one with ON CONFLICT clauses."""
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def dialect_of(session: Session) -> str:
    """The session's database: "postgresql" or "sqlite"."""
    return session.get_bind().dialect.name


def in_list(column: Any, name: str, dialect: str) -> Any:
    """`column IN :name` for a list given when executed. On PostgreSQL `column = ANY(:name)`,
    the list one array parameter: the same SQL text whatever its length, so psycopg prepares it
    and PostgreSQL plans it once. An expanding IN is a new statement for every length, parsed
    and planned each time: 2.5 ms of planning for a batch's read of 200 invoices' cases, where
    running it took 0.3 ms. SQLite has no arrays: the expanding IN."""
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=postgresql.ARRAY(column.type)))
    return column.in_(bindparam(name, expanding=True))


def insert_ignoring(dialect: str, target: Any, conflict: Sequence[str] = ()) -> Any:
    """INSERT ... ON CONFLICT [(conflict)] DO NOTHING into a table or a model; the caller adds
    its RETURNING and builds the statement once (functools.cache): executed with the values as
    parameters, SQLAlchemy compiles it once and reuses it (values baked into the statement cost
    a fresh cache key over every value on every call - most of the time of a webhook, measured)."""
    return dialect_insert(dialect)(target).on_conflict_do_nothing(
        index_elements=list(conflict) or None
    )


def insert_rows_ignoring(
    session: Session,
    table: Any,
    rows: Sequence[Mapping[str, Any]],
    conflict: Sequence[str],
    returning: Sequence[str],
) -> Any:
    """`insert_ignoring` for many rows (at least one; each with the same keys) in one
    statement; returns the result of RETURNING `returning` (the rows added). On PostgreSQL the
    rows go as one JSON text, `INSERT ... SELECT FROM json_to_recordset(...)`: the same short
    SQL text whatever the number of rows, so psycopg converts it once and PostgreSQL plans it
    once (a multi-row VALUES list is a new statement for every length, which psycopg re-parsed
    placeholder by placeholder: about a tenth of a worker's CPU samples); and the rows are made
    text by the json module's C encoder, where arrays, one a column, were escaped element by
    element in Python by psycopg (5 % of a worker, most of it the timeline lines' JSON). SQLite:
    the multi-row VALUES."""
    dialect = dialect_of(session)
    columns = tuple(rows[0])
    statement = _rows_ignoring_statement(dialect, table, columns, tuple(conflict), tuple(returning))
    if dialect != "postgresql":
        return session.execute(statement, list(rows))
    return session.execute(statement, {"rows": json_rows(table, columns, rows)})


def json_rows(table: Any, columns: tuple[str, ...], rows: Sequence[Mapping[str, Any]]) -> str:
    """PostgreSQL: rows (with `columns`) of `table` as one JSON text for `insert_from_json`:
    UTC times as PostgreSQL reads them, dates as ISO text, JSON columns as the text their
    column type would store (`_recordset_type`)."""
    times, dates, documents = _json_kinds(table, columns)
    if not times and not dates and not documents:
        return json.dumps(rows if isinstance(rows, list) else list(rows))
    converted = []
    for row in rows:
        values = dict(row)
        for name in times:
            values[name] = _utc_text(values[name])
        for name in dates:
            day = values[name]
            values[name] = None if day is None else day.isoformat()
        for name, none_as_null in documents:
            document = values[name]
            values[name] = None if document is None and none_as_null else json.dumps(document)
        converted.append(values)
    return json.dumps(converted)


def _utc_text(at: datetime | None) -> str | None:
    """As UTCDateTime stores it, as text."""
    return None if at is None else _as_stored(at).isoformat()


def _as_stored(at: datetime) -> datetime:
    """What a UTCDateTime column stores: the UTC time without its zone (refused when naive)."""
    if at.tzinfo is UTC:  # (nearly all: asked first, before converting)
        return at.replace(tzinfo=None)
    if at.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return at.astimezone(UTC).replace(tzinfo=None)


@functools.cache
def _json_kinds(
    table: Any, columns: tuple[str, ...]
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, bool], ...]]:
    times = tuple(c for c in columns if isinstance(table.c[c].type, UTCDateTime))
    dates = tuple(c for c in columns if isinstance(table.c[c].type, Date))
    documents = tuple(
        (c, bool(table.c[c].type.none_as_null))
        for c in columns
        if isinstance(table.c[c].type, JSON)
    )
    return times, dates, documents


def _recordset_type(column: Any) -> Any:
    """A column's type in json_to_recordset: JSON documents arrive as text (cast back below),
    UTC times as text PostgreSQL's timestamp reads."""
    if isinstance(column.type, JSON):
        return Text()
    if isinstance(column.type, UTCDateTime):
        return DateTime()
    return column.type


@functools.cache
def _rows_ignoring_statement(
    dialect: str,
    table: Any,
    columns: tuple[str, ...],
    conflict: tuple[str, ...],
    returning: tuple[str, ...],
) -> Any:
    if dialect != "postgresql":
        return insert_ignoring(dialect, table, conflict).returning(*(table.c[c] for c in returning))
    statement = insert_from_json(table, columns)
    statement = statement.on_conflict_do_nothing(index_elements=list(conflict) or None)
    return statement.returning(*(table.c[c] for c in returning))


@functools.cache
def insert_from_json(table: Any, columns: tuple[str, ...]) -> Any:
    """PostgreSQL: INSERT INTO table (columns) SELECT FROM json_to_recordset(:rows), the rows
    given by `json_rows`; the caller adds its ON CONFLICT and RETURNING."""
    source = _recordset(table, columns)
    values = [_from_recordset(table, source, c) for c in columns]
    return postgresql.insert(table).from_select(list(columns), select(*values))


def _recordset(table: Any, columns: tuple[str, ...]) -> Any:
    fields = [sql_column(c, _recordset_type(table.c[c])) for c in columns]
    source = func.json_to_recordset(
        cast(bindparam("rows", type_=Text()), postgresql.JSON)
    ).table_valued(*fields)
    return source.render_derived(with_types=True)


def _from_recordset(table: Any, source: Any, name: str) -> Any:
    """A column's value from the recordset: a JSON document cast back from its text."""
    value = source.c[name]
    return cast(value, postgresql.JSON) if isinstance(table.c[name].type, JSON) else value


def update_changed_together(session: Session, rows: Iterable[Any]) -> None:
    """PostgreSQL: what changed in these loaded rows of one model, written in one UPDATE a set
    of changed columns (the rows as one JSON text), where the flush runs one UPDATE a row - a
    worker's round of retries changes a hundred cases; those UPDATEs were most of its
    statements (PostgreSQL's log, bench/worker_throughput.py). The rows are clean afterwards:
    the flush writes nothing more for them. SQLite: left to the flush."""
    if dialect_of(session) != "postgresql":
        return
    groups: dict[tuple[Any, tuple[str, ...]], list[tuple[Any, dict[str, Any]]]] = {}
    for row in rows:
        state = inspect(row)
        if not state.modified or not state.persistent:
            continue
        attributes = _column_attributes(state.mapper)
        changed = {
            key: state.dict.get(key)
            for key in state.committed_state  # (those set since loaded; some to the same value)
            if key in attributes
            and get_history(row, key, PassiveFlag.PASSIVE_NO_INITIALIZE).has_changes()
        }
        if changed:
            groups.setdefault((state.mapper, tuple(sorted(changed))), []).append((row, changed))
    for (mapper, keys), changes in groups.items():
        table = mapper.local_table
        (key,) = mapper.primary_key
        names = {k: mapper.column_attrs[k].columns[0].name for k in keys}
        values = [
            {key.name: inspect(row).identity[0], **{names[k]: v for k, v in changed.items()}}
            for row, changed in changes
        ]
        columns = (key.name, *(names[k] for k in keys))
        statement = _update_from_json(table, columns)
        with session.no_autoflush:  # (the flush would write these very rows first)
            session.execute(statement, {"rows": json_rows(table, columns, values)})
        for row, changed in changes:
            for attribute, value in changed.items():
                set_committed_value(row, attribute, value)


@functools.cache
def _column_attributes(mapper: Any) -> frozenset[str]:
    return frozenset(attribute.key for attribute in mapper.column_attrs)


@functools.cache
def _update_from_json(table: Any, columns: tuple[str, ...]) -> Any:
    """UPDATE table SET columns[1:] FROM json_to_recordset(:rows) by columns[0], the key."""
    source = _recordset(table, columns)
    key, *changed = columns
    return (
        update(table)
        .where(table.c[key] == source.c[key])
        .values({c: _from_recordset(table, source, c) for c in changed})
    )


@functools.cache
def _insert_or_ignore_statement(dialect: str, model: Any, conflict: tuple[str, ...]) -> Any:
    table = model.__table__
    pk = next(iter(table.primary_key.columns))
    return insert_ignoring(dialect, table, conflict).returning(pk)


def insert_or_ignore(
    session: Session,
    model: Any,
    values: dict[str, Any],
    conflict_columns: list[str] | None = None,
) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING. True when this call inserted the row.

    Uses RETURNING rather than the row count: psycopg reports -1 for a conflicting insert.
    """
    dialect = dialect_of(session)
    stmt = _insert_or_ignore_statement(dialect, model, tuple(conflict_columns or ()))
    return session.execute(stmt, as_columns(model, values)).first() is not None


@functools.cache
def _update_by_key_statement(model: Any) -> Any:
    table = model.__table__
    (pk,) = table.primary_key.columns
    return update(table).where(pk == bindparam("_key"))


def update_by_key(session: Session, model: Any, key: Any, values: dict[str, Any]) -> None:
    """UPDATE one row by primary key, from a prebuilt statement (see above for why)."""
    session.execute(_update_by_key_statement(model), {**as_columns(model, values), "_key": key})


def execute_count(session: Session, statement: Any) -> int:
    """Run an UPDATE/DELETE and return how many rows it touched."""
    result: CursorResult[Any] = session.execute(statement)  # type: ignore[assignment]
    return int(result.rowcount or 0)


# The worker's writers take turns on PostgreSQL through one advisory lock (ours: "reco").
# A batch of events locks rows - customers, invoices, cases, their due actions - in the order
# its events came; an action round locks due actions, then cases in id order. Two batches, or
# a batch and a round, could each hold what the other waited for: PostgreSQL found the
# deadlock after its 1 s `deadlock_timeout` and rolled one back - with a batch, 200 events of
# work - about once in ten seconds at 500 events/s. So a batch of events runs alone (exclusive)
# and action rounds run side by side (shared); their provider calls are outside any of these.
WRITERS_TURN_KEY = 0x7265636F
_TAKE_TURN = {
    True: text("SELECT pg_advisory_xact_lock(:k)"),
    False: text("SELECT pg_advisory_xact_lock_shared(:k)"),
}


def take_writers_turn(session: Session, *, exclusive: bool) -> None:
    """Wait for this transaction's turn (see WRITERS_TURN_KEY); held until it ends. SQLite has
    one writer at a time anyway: nothing to do."""
    if dialect_of(session) == "postgresql":
        session.execute(_TAKE_TURN[exclusive], {"k": WRITERS_TURN_KEY})
