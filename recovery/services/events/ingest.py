"""Receiving a webhook: read the few fields the inbox indexes, store the raw event, and only then
acknowledge (recovery/web/webhooks.py). Processing is the worker's (services/events/processing.py).

PostgreSQL - group commit. The request threads of a web process hand their row to whichever of
them is writing: the first to arrive writes at once; those arriving meanwhile queue, and the
next write takes them all - one multi-row INSERT ... ON CONFLICT (id) DO NOTHING RETURNING id,
which also NOTIFYs the workers (`recovery_events`, sent at the commit), committed by itself
(autocommit: one round trip, no BEGIN or COMMIT). No batch waits for a timer: a batch is what
queued during the previous write. Each request is answered only after the statement holding its
row committed - new (its id came back) or a duplicate (stored before, or earlier in the same
batch). PostgreSQL's per-statement and per-transaction work is paid once per batch.
- A write that fails answers every request in it with `StoreUnavailable` (503: not
  acknowledged, so Stripe retries; if the row did commit, the retry is a duplicate).
- A value the database refuses (`StoreRefused`, 400) fails only its own request: the batch's
  rows are then written one by one to find it. parse_event refuses what PostgreSQL cannot hold
  (a NUL, a lone surrogate), so this is a safety net.
- A request still queued after DEADLINE_SECONDS is a 503 and leaves the queue unwritten.

The statement runs on a psycopg connection of the process's own, not through SQLAlchemy: one
writer at a time needs one connection; each batch size's statement is prepared once; no ping -
a connection whose statement failed is closed and the next batch connects afresh. It is
recycled like the pool's (POOL_RECYCLE_SECONDS) and closed by `Database.dispose()`.

SQLite (one process: `recovery run`, tests): one INSERT in a transaction of its own per request;
SQLite has one writer anyway. Either way `arrived` is set, for a worker in the same process.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import pq
from sqlalchemy import Engine, event
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import DataError, DBAPIError

from recovery.db import POOL_RECYCLE_SECONDS, Database
from recovery.domain.stripe_objects import MAX_TIMESTAMP
from recovery.models import EventStatus, StripeEvent

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "recovery_events"

arrived = threading.Event()
"""Set when this process stored a new event: wakes a worker running in the same process."""

# Stripe waits about 30 s for an answer (docs/stripe.md, "Delivery"): queueing plus the write stay
# well inside it, and a 503 in time beats a timeout (both make Stripe retry).
DEADLINE_SECONDS = 10.0
STATEMENT_TIMEOUT_MS = 5000
MAX_BATCH = 50  # rows per statement; a batch is at most the process's request threads anyway


class InvalidEvent(ValueError):
    """The body is JSON but not a Stripe event."""


class StoreError(Exception):
    """The event could not be stored; the message says why."""


class StoreUnavailable(StoreError):
    """Not stored, or not known to be: the caller answers 503 and Stripe delivers again."""


class StoreRefused(StoreError):
    """A value the database cannot hold: the sender's mistake (400)."""


@dataclass(frozen=True)
class ParsedEvent:
    id: str
    type: str
    created: int
    api_version: str | None
    livemode: bool
    object_id: str | None


def _storable(text: str) -> bool:
    """Whether PostgreSQL can hold the text: no NUL, no lone surrogate (a JSON \\u escape can
    make either); one bad row must not fail the batch it shares."""
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_event(body: bytes) -> tuple[ParsedEvent, dict[str, Any]]:
    """Parse and sanity-check a webhook body. Raises ValueError (InvalidEvent) with a reason."""
    try:
        # Strict UTF-8 first: the body is stored as text, byte for byte (json.loads of bytes
        # would also take UTF-16 and encoded surrogates, which the text column cannot hold).
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEvent(f"body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidEvent("body is not valid JSON: nested too deeply") from exc
    if not isinstance(data, dict):
        raise InvalidEvent("body is not a JSON object")
    evt_id, evt_type, created = data.get("id"), data.get("type"), data.get("created")
    if not isinstance(evt_id, str) or not 0 < len(evt_id) <= 255 or not _storable(evt_id):
        raise InvalidEvent("event has no valid id")
    if not isinstance(evt_type, str) or not 0 < len(evt_type) <= 100 or not _storable(evt_type):
        raise InvalidEvent("event has no valid type")
    if not isinstance(created, int) or isinstance(created, bool):
        raise InvalidEvent("event has no valid created timestamp")
    if not 0 <= created <= MAX_TIMESTAMP:
        raise InvalidEvent("event has no valid created timestamp")
    inner = data.get("data")
    obj = inner.get("object") if isinstance(inner, dict) else None
    if not isinstance(obj, dict):
        raise InvalidEvent("event has no data.object")
    object_id = obj.get("id")
    api_version = data.get("api_version")
    if isinstance(object_id, str) and not _storable(object_id):
        raise InvalidEvent("event has no valid data.object.id")
    if isinstance(api_version, str) and not _storable(api_version):
        raise InvalidEvent("event has no valid api_version")
    return (
        ParsedEvent(
            id=evt_id,
            type=evt_type,
            created=created,
            api_version=api_version[:40] if isinstance(api_version, str) else None,
            livemode=data.get("livemode") is True,
            object_id=object_id[:255] if isinstance(object_id, str) and object_id else None,
        ),
        data,
    )


def event_row(event: ParsedEvent, body: bytes, now: datetime) -> dict[str, Any]:
    """The `stripe_events` row of a new delivery, by column (SQLAlchemy statements)."""
    return {
        "id": event.id,
        "type": event.type,
        "api_version": event.api_version,
        "created": event.created,
        "livemode": event.livemode,
        "object_id": event.object_id,
        "payload": body.decode("utf-8"),
        "received_at": now,
        "status": EventStatus.PENDING,
        "attempts": 0,
        "next_attempt_at": now,  # due at once: the worker takes it from here
    }


Row = tuple[bytes, bytes, bytes | None, bytes, bytes, bytes | None, bytes, bytes]
"""The parameters of one row, as PostgreSQL's text format: id, type, api_version, created,
livemode, object_id, payload (the body itself), received_at (naive UTC, as the columns hold it)."""


def row_of(event: ParsedEvent, body: bytes, now: datetime) -> Row:
    """`event_row`'s values as `insert_rows` sends them. The body goes as it came: parse_event
    checked that it is UTF-8 JSON, which cannot hold a NUL."""
    received = now.astimezone(UTC).replace(tzinfo=None).isoformat()  # as db.UTCDateTime binds
    return (
        event.id.encode(),
        event.type.encode(),
        event.api_version.encode() if event.api_version is not None else None,
        b"%d" % event.created,
        b"t" if event.livemode else b"f",
        event.object_id.encode() if event.object_id is not None else None,
        body,
        received.encode(),
    )


_COLUMNS = 8  # parameters per row; next_attempt_at = received_at: due at once


@functools.cache
def _insert_sql(rows: int, notify: bool = True) -> bytes:
    values = ", ".join(
        "({}, '{}', 0, ${})".format(
            ", ".join(f"${r * _COLUMNS + c}" for c in range(1, _COLUMNS + 1)),
            EventStatus.PENDING,
            r * _COLUMNS + _COLUMNS,
        )
        for r in range(rows)
    )
    return (
        f"WITH stored AS (INSERT INTO {StripeEvent.__tablename__} (id, type, api_version, "
        "created, livemode, object_id, payload, received_at, status, attempts, next_attempt_at) "
        f"VALUES {values} ON CONFLICT (id) DO NOTHING RETURNING id) "
        # NOTIFY per inserted row; PostgreSQL sends one per transaction for identical payloads.
        + (
            f"SELECT stored.id, pg_notify('{NOTIFY_CHANNEL}', '') FROM stored"
            if notify
            else "SELECT stored.id FROM stored"
        )
    ).encode()


def insert_rows(
    conn: psycopg.Connection[Any],
    rows: Sequence[Row],
    prepared: set[int] | None = None,
    *,
    notify: bool = True,
) -> set[bytes]:
    """One INSERT ... ON CONFLICT DO NOTHING of these rows, NOTIFYing the workers if one is new
    (unless not `notify`); committed on return when the connection is in autocommit. The ids
    inserted.

    Straight through libpq (psycopg.pq): the values are text already, and psycopg's cursor,
    adaptation and result layers cost more CPU than the statement (65 against 27 us a row,
    measured); the GIL is released while libpq waits. `prepared`: the batch sizes already
    prepared on this connection (a statement per batch size, prepared on first use), or None
    for an unnamed statement (as every statement without `notify` is)."""
    unique: dict[bytes, Row] = {}
    for row in rows:
        unique.setdefault(row[0], row)
    params: list[bytes | None] = [value for row in unique.values() for value in row]
    if any(value is not None and b"\x00" in value for value in params):
        # libpq's text parameters end at a NUL: the value would be cut short, not refused.
        raise psycopg.DataError("a value holds a NUL character")
    pgconn, size = conn.pgconn, len(unique)
    if prepared is None or not notify:
        result = _checked(pgconn.exec_params(_insert_sql(size, notify), params))
    else:
        name = b"recovery_ingest_%d" % size
        if size not in prepared:
            _checked(pgconn.prepare(name, _insert_sql(size)))
            prepared.add(size)
        # None is NULL, as for exec_params: psycopg's stub for exec_prepared omits it.
        result = _checked(pgconn.exec_prepared(name, params))  # type: ignore[arg-type]
    return {result.get_value(i, 0) or b"" for i in range(result.ntuples)}


def _checked(result: Any) -> Any:
    if result.status in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
        return result
    state = (result.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode()
    message = (result.error_message or b"").decode(errors="replace").strip()
    if state.startswith("22"):  # data exception: a value the column cannot hold
        raise psycopg.DataError(message)
    raise psycopg.OperationalError(message or "the statement failed")


# ---- group commit (PostgreSQL) ------------------------------------------------------------------


@dataclass(frozen=True)
class _Failure:
    error: type[Exception]  # StoreUnavailable, StoreRefused; RuntimeError for a bug
    message: str
    cause: BaseException


@dataclass(eq=False)
class _Waiting:
    row: Row
    ready: threading.Event = field(default_factory=threading.Event)
    leads: bool = False
    outcome: bool | _Failure | None = None


def _close_quietly(conn: psycopg.Connection[Any]) -> None:
    try:
        conn.close()
    except Exception:  # closing a connection that already failed
        log.debug("closing the ingest connection failed", exc_info=True)


class GroupCommit:
    """One per web process and database: the queue and the writing connection."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._queue: list[_Waiting] = []
        self._busy = False  # a request is writing a batch; the queue is non-empty only then
        self._conn: psycopg.Connection[Any] | None = None
        self._conn_engine: Engine | None = None
        self._conn_born = 0.0
        self._prepared: set[int] = set()  # batch sizes prepared on the connection
        self._close_at_gc: weakref.finalize[Any, Any] | None = None
        self._stale = False  # Database.dispose() ran while a batch was being written
        self._engines: weakref.WeakSet[Engine] = weakref.WeakSet()
        self.batches = 0  # statements written, for tests and the benchmark
        self.rows = 0

    def waiting(self) -> int:
        """Requests queued behind the write in progress (tests, diagnostics)."""
        with self._lock:
            return len(self._queue)

    def store(self, engine: Engine, row: Row) -> bool:
        """Store one row with whatever else is waiting. True when it is new. Raises StoreError."""
        me = _Waiting(row)
        with self._lock:
            self._queue.append(me)
            if not self._busy:
                self._busy = me.leads = True
        if not me.leads:
            me.ready.wait(DEADLINE_SECONDS)
            with self._lock:
                if not me.leads and me.outcome is None:
                    if me in self._queue:  # never written: nothing of it is stored
                        self._queue.remove(me)
                        raise StoreUnavailable("the event could not be stored in time; retry")
                    # Being written right now: stored or not, we cannot say yet.
                    raise StoreUnavailable("the database did not answer in time; retry")
        if me.leads:
            self._lead(engine)
        outcome = me.outcome
        if isinstance(outcome, _Failure):
            raise outcome.error(outcome.message) from outcome.cause
        return bool(outcome)

    def _lead(self, engine: Engine) -> None:
        with self._lock:
            batch = self._queue[:MAX_BATCH]
            del self._queue[:MAX_BATCH]
        outcomes: list[bool | _Failure] = []
        try:
            outcomes = self._write(engine, [waiting.row for waiting in batch])
        except Exception as exc:  # a bug, not the database: each request answers 500
            log.exception("storing %d webhook events failed", len(batch))
            outcomes = [_Failure(RuntimeError, "storing the event failed", exc)] * len(batch)
        finally:
            with self._lock:
                for waiting, outcome in zip(batch, outcomes, strict=False):
                    waiting.outcome = outcome
                    waiting.ready.set()
                for waiting in batch[len(outcomes) :]:  # interrupted: no answer is known
                    waiting.outcome = _Failure(StoreUnavailable, "interrupted", RuntimeError())
                    waiting.ready.set()
                if self._stale and self._conn is not None:
                    self._close()
                if self._queue:  # the next batch is written by the first request in it
                    self._queue[0].leads = True
                    self._queue[0].ready.set()
                else:
                    self._busy = False

    def _write(self, engine: Engine, rows: list[Row]) -> list[bool | _Failure]:
        try:
            conn = self._connection(engine)
            stored = insert_rows(conn, rows, self._prepared)
        except psycopg.DataError as exc:  # a value refused: whose? (parse_event should stop it)
            if len(rows) > 1:
                return [self._write(engine, [row])[0] for row in rows]
            log.info("webhook value refused by the database")
            return [_Failure(StoreRefused, "a parameter has a value not allowed", exc)]
        except (psycopg.Error, DBAPIError) as exc:
            # Down, restarted, timed out: this connection is not trusted again.
            log.error("database unavailable: %s", exc.__class__.__name__)
            with self._lock:
                self._close()
            unavailable = _Failure(StoreUnavailable, "the database is unavailable; retry", exc)
            return [unavailable] * len(rows)
        self.batches += 1
        self.rows += len(rows)
        outcomes: list[bool | _Failure] = []
        for row in rows:
            outcomes.append(row[0] in stored)
            stored.discard(row[0])  # a repeat later in the batch is a duplicate
        return outcomes

    def _connection(self, engine: Engine) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is not None and (
            conn.closed
            or self._conn_engine is not engine  # tests point a Database at another engine
            or time.monotonic() - self._conn_born > POOL_RECYCLE_SECONDS
        ):
            with self._lock:
                self._close()
            conn = None
        if conn is None:
            conn = self._connect(engine)
        return conn

    def _connect(self, engine: Engine) -> psycopg.Connection[Any]:
        # The engine's own connection arguments (host lists, SSL, ...), plus bounds on every
        # wait: the writer holds up every request of the process while it waits.
        cargs, cparams = engine.dialect.create_connect_args(engine.url)
        params = {
            "connect_timeout": int(DEADLINE_SECONDS),
            "tcp_user_timeout": int(DEADLINE_SECONDS * 1000),
            **cparams,
            "autocommit": True,
            "client_encoding": "UTF8",  # the body is sent as the bytes that came
        }
        statement_timeout = f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"
        params["options"] = f"{params.get('options', '')} {statement_timeout}".strip()
        conn = psycopg.connect(*cargs, **params)
        with self._lock:
            self._conn, self._conn_engine, self._conn_born = conn, engine, time.monotonic()
            self._prepared = set()
            self._close_at_gc = weakref.finalize(self, _close_quietly, conn)
            self._stale = False
            if engine not in self._engines:
                self._engines.add(engine)
                event.listen(engine, "engine_disposed", self._disposed)
        return conn

    def _close(self) -> None:
        """Close the writing connection (with the lock held)."""
        if self._close_at_gc is not None:
            self._close_at_gc()  # closes it, once
        self._conn, self._conn_engine, self._close_at_gc = None, None, None

    def _disposed(self, engine: Engine) -> None:
        """Database.dispose(): close the connection now, or after the batch being written."""
        with self._lock:
            if self._conn_engine is engine:
                if self._busy:
                    self._stale = True
                else:
                    self._close()

    def abandon(self) -> None:
        """In a forked child: the parent's connection is not ours to close (closing it would end
        the parent's session on the shared socket), so it is kept, unused, for good."""
        if self._close_at_gc is not None:
            self._close_at_gc.detach()
            _INHERITED.append(self._conn)


_INHERITED: list[Any] = []
_committers: weakref.WeakKeyDictionary[Database, GroupCommit] = weakref.WeakKeyDictionary()
_committers_lock = threading.Lock()


def group_commit(db: Database) -> GroupCommit:
    """The process's group commit for this database."""
    committer = _committers.get(db)
    if committer is None or committer.pid != os.getpid():
        with _committers_lock:
            committer = _committers.get(db)
            if committer is None or committer.pid != os.getpid():
                if committer is not None:
                    committer.abandon()
                committer = _committers[db] = GroupCommit()
    return committer


# ---- one request ---------------------------------------------------------------------------------


@functools.cache
def _sqlite_statement() -> Any:
    table: Any = StripeEvent.__table__
    insert = sqlite.insert(table).on_conflict_do_nothing(index_elements=["id"])
    return insert.returning(table.c.id)


def ingest(db: Database, event: ParsedEvent, body: bytes, now: datetime) -> bool:
    """Store one verified event, committed before this returns. True when it is new. Raises
    StoreUnavailable (answer 503: not stored, not acknowledged) or StoreRefused (400)."""
    if db.is_postgres:
        new = group_commit(db).store(db.engine, row_of(event, body, now))
    else:
        try:
            with db.engine.begin() as conn:
                found = conn.execute(_sqlite_statement(), event_row(event, body, now)).first()
            new = found is not None
        except DataError as exc:
            raise StoreRefused("a parameter has a value not allowed") from exc
        except DBAPIError as exc:
            raise StoreUnavailable("the database is unavailable; retry") from exc
    if new:
        arrived.set()
    return new
