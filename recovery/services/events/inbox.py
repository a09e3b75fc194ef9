"""The webhook inbox: store each verified event with one statement, acknowledge, and let the
worker process stored events in batches.

Receiving (`ingest`, the web request; services/events/ingest.py): the raw event stored by an
INSERT ... ON CONFLICT DO NOTHING on the event id, committed, then 2xx - on PostgreSQL one
statement for all the requests of a web process waiting at that moment, which also NOTIFYs the
workers (`recovery_events`, delivered at the commit); in one process (SQLite's `recovery run`)
`arrived` is set instead. Either wakes a worker, so an event is processed within a second of
arriving, not at the next tick. A crash before the commit loses nothing: nothing was
acknowledged, and Stripe delivers again.

Processing (`process_pending`, the worker; services/events/processing.py): batches of pending
events, oldest first, each in one transaction, one bad event rolled back alone. Any order,
duplicates and crashes end in the same mirror as in-order delivery: the mirror keeps the
newest state whatever the order (services/events/mirror.py).

`RECOVERY_PROCESS_INLINE=1` processes a new event in the request after its commit instead (the
same batch code, for that one event).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from psycopg import pq
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from recovery.adapters.clock import Clock
from recovery.db import Database, dialect_of, insert_ignoring, insert_or_ignore
from recovery.models import EventStatus, StripeEvent
from recovery.runtime import ContextFactory
from recovery.services.events import processing
from recovery.services.events.ingest import (  # re-exported: the worker, the CLI, tests
    NOTIFY_CHANNEL,
    InvalidEvent,
    ParsedEvent,
    arrived,
    ingest,
    insert_rows,
    parse_event,
    row_of,
)
from recovery.services.events.ingest import event_row as _row
from recovery.services.events.processing import (  # re-exported: the worker, the CLI, tests
    BATCH,
    MAX_PROCESSING_ATTEMPTS,
    backoff,
    process_events,
    process_pending,
    process_stored_event,
    redrive_due_events,
)

__all__ = [
    "BATCH",
    "MAX_PROCESSING_ATTEMPTS",
    "NOTIFY_CHANNEL",
    "InvalidEvent",
    "ParsedEvent",
    "arrived",
    "backoff",
    "ingest",
    "parse_event",
    "process_events",
    "process_pending",
    "process_stored_event",
    "redrive_due_events",
]

log = logging.getLogger(__name__)


def store_event(session: Session, event: ParsedEvent, body: bytes, now: datetime) -> bool:
    """Insert the raw event unless its id is already stored (in the caller's transaction).
    True when it is new."""
    return insert_or_ignore(session, StripeEvent, _row(event, body, now))


def store_events(
    session: Session, events: Sequence[tuple[ParsedEvent, bytes]], now: datetime
) -> list[bool]:
    """`store_event` for many bodies in one multi-row INSERT ... ON CONFLICT DO NOTHING
    RETURNING (in the caller's transaction). Per body, whether it is new: the first of an id
    not already stored; a repeat within `events` is not."""
    if not events:
        return []
    dialect = dialect_of(session)
    if dialect == "postgresql":
        stored = _store_through_libpq(session, events, now)
    else:
        rows: dict[str, dict[str, Any]] = {}
        for event, body in events:
            rows.setdefault(event.id, _row(event, body, now))
        stored = set(session.scalars(_store_many_statement(dialect), list(rows.values())))
    new = []
    for event, _ in events:
        new.append(event.id in stored)
        stored.discard(event.id)  # a repeat later in `events` is a redelivery
    return new


def _store_through_libpq(
    session: Session, events: Sequence[tuple[ParsedEvent, bytes]], now: datetime
) -> set[str]:
    """The webhook path's INSERT (ingest.insert_rows: the values as text straight to libpq),
    in the session's transaction, without waking the workers: these events are processed in
    this transaction. Through SQLAlchemy's insertmanyvalues and psycopg's adaptation it cost
    70 us of CPU a row, a tenth of the chaos replay's CPU on PostgreSQL (measured). Unnamed, not
    prepared: psycopg deallocates every prepared statement of the connection when a
    transaction rolls back."""
    conn: Any = session.connection().connection.driver_connection
    if conn.pgconn.transaction_status == pq.TransactionStatus.IDLE:
        conn.execute("SELECT 1")  # psycopg opens the session's transaction (BEGIN) first
    rows = [row_of(event, body, now) for event, body in events]
    return {event_id.decode() for event_id in insert_rows(conn, rows, None, notify=False)}


@functools.cache
def _store_many_statement(dialect: str) -> Any:
    # One statement for a chunk (SQLAlchemy's "insertmanyvalues": batched VALUES lists, the
    # inserted ids returned): a statement per body was a fifth of the chaos replay's time.
    table: Any = StripeEvent.__table__
    return insert_ignoring(dialect, table, ["id"]).returning(table.c.id)


def reset_for_replay(
    db: Database, *, failed: bool, event_ids: Sequence[str] = (), now: datetime
) -> list[str]:
    """Make events due now: the parked ones (`failed`), or the pending ones, or given ids."""
    with db.transaction() as session:
        query = select(StripeEvent.id)
        if event_ids:
            query = query.where(StripeEvent.id.in_(event_ids))
        else:
            wanted = EventStatus.FAILED if failed else EventStatus.PENDING
            query = query.where(StripeEvent.status == wanted)
        ids = list(session.scalars(query.order_by(StripeEvent.created, StripeEvent.id)))
        if ids:
            session.execute(
                update(StripeEvent)
                .where(StripeEvent.id.in_(ids))
                .values(status=EventStatus.PENDING, attempts=0, next_attempt_at=now)
            )
        return ids


# ---- receive and process at once (CLI, demo, tests, the inline mode) ----------------------------


def receive_event(
    db: Database,
    event: ParsedEvent,
    data: dict[str, Any],
    body: bytes,
    ctx_factory: ContextFactory,
    clock: Clock,
    *,
    process: bool = True,
) -> str:
    """Store one verified event and (when `process`) apply it after the commit. Returns
    "duplicate" for an event already stored, else its status: processed, or pending (left to
    the worker, or failed and backing off)."""
    if not ingest(db, event, body, clock.now()):
        return "duplicate"
    if not process:
        return EventStatus.PENDING
    status = process_events(db, [event.id], ctx_factory, clock)[event.id]
    return EventStatus.PENDING if status == EventStatus.FAILED else status


RECEIVE_CHUNK = 100


def receive_events(
    db: Database,
    bodies: Iterable[bytes],
    ctx_factory: ContextFactory,
    clock: Clock,
    chunk: int = RECEIVE_CHUNK,
) -> list[bool]:
    """Deliver webhook bodies as Stripe would, in this order, and process them as the worker
    does: each chunk is stored, and its new events processed in arrival order (a savepoint
    each), in one transaction - so no worker can take them meanwhile. Returns, per body,
    whether it was new."""
    results: list[bool] = []
    pending: list[tuple[ParsedEvent, dict[str, Any], bytes]] = []

    def flush() -> None:
        now = clock.now()
        with processing.batch_transaction(db) as session:
            stored = store_events(session, [(event, body) for event, _, body in pending], now)
            results.extend(stored)
            fresh = [
                processing.Claimed(event.id, 0, data)
                for (event, data, _), new in zip(pending, stored, strict=True)
                if new
            ]
            processing.apply(session, fresh, ctx_factory, now, db.dialect)
        pending.clear()

    for body in bodies:
        event, data = parse_event(body)
        pending.append((event, data, body))
        if len(pending) >= chunk:
            flush()
    if pending:
        flush()
    return results
