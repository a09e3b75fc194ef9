"""Processing stored events in batches: what the worker does with the inbox.

A batch of pending events, oldest first, is claimed `FOR UPDATE SKIP LOCKED` on PostgreSQL and
applied in one transaction while no other batch and no action round writes
(db.take_writers_turn: their row locks, taken in different orders, deadlocked); SQLite has one
writer and one claimer per process. An event whose processing raises rolls back alone (its
savepoint) and is retried with backoff until it succeeds or is parked as `failed`; the others
commit. The database going away fails the whole batch, which stays pending.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import logging
import random
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import InterfaceError, OperationalError, PendingRollbackError
from sqlalchemy.orm import Session

from recovery.adapters.clock import Clock
from recovery.db import Database, in_list, take_writers_turn
from recovery.models import EventStatus, StripeEvent
from recovery.runtime import (
    Changes,
    ContextFactory,
    Gated,
    Payload,
    ProcessingContext,
    take_batch_moves,
    take_moved_cases,
)
from recovery.services.cases import cards
from recovery.services.cases import reactions as case_reactions
from recovery.services.events import gates
from recovery.services.events.dispatch import process_payload
from recovery.services.events.mirror_batch import MirrorBatch
from recovery.services.events.mirror_handlers import MirrorHandler, Op

log = logging.getLogger(__name__)

MAX_PROCESSING_ATTEMPTS = 8
BATCH = 200  # events per processing transaction

_SQLITE_CLAIMER = threading.Lock()  # one claimer per process; SQLite has one writer anyway


def backoff(attempts: int, rng: random.Random | None = None) -> timedelta:
    """30 s, 1 min, 2 min ... capped at 6 h, with +-20 % jitter so a burst does not re-align."""
    base = min(30 * 2 ** max(attempts - 1, 0), 6 * 3600)
    jitter = (rng or random).uniform(0.8, 1.2)
    return timedelta(seconds=base * jitter)


_DATABASE_GONE = (OperationalError, InterfaceError, PendingRollbackError)


@dataclass(frozen=True)
class Claimed:
    id: str
    attempts: int
    data: dict[str, Any] | None  # parsed already (receive_events), or read from `payload`
    payload: str = ""


def apply(
    session: Session,
    events: Sequence[Claimed],
    ctx_factory: ContextFactory,
    now: datetime,
    dialect: str,
) -> dict[str, str]:
    """Process claimed events in the caller's transaction, in their order. Returns each
    event's status afterwards.

    An event none of whose reactions is needed (services/events/gates.py) only updates the
    mirror: its rows are worked out in memory with the batch's others and written together
    (services/events/mirror_batch.py), in a savepoint per such run of events. Any other event
    runs whole - mirror and reactions - in a savepoint of its own, after the rows before it are
    written. An event that fails rolls back alone (a run whose write fails is replayed event by
    event to find it) and is retried with backoff. A case's re-evaluation the events ask for is
    made once (services/cases/reactions.py), at the latest here at the end; if it fails, the
    events that asked are retried.

    The savepoints are only needed when something fails, which is rare, and they were a quarter
    of a batch's statements on PostgreSQL (a SAVEPOINT and a RELEASE, each a round trip, per
    event that runs its reactions, per run of mirror-only events and per re-evaluated case). So
    the batch runs first under one savepoint alone; if anything in it fails, that savepoint is
    rolled back and the batch runs again with a savepoint per event, as described above - the
    same end state either way."""
    info = _copy_info(session)
    try:
        with session.begin_nested():
            return _apply_deferring(session, ctx_factory, events, now, dialect, careful=False)
    except _DATABASE_GONE:
        raise
    except Exception as exc:  # who failed, and how, the careful run finds out and records
        log.info("batch of %d events failed (%s); again event by event", len(events), exc)
    session.info.clear()
    session.info.update(info)
    session.expunge_all()
    return _apply_deferring(session, ctx_factory, events, now, dialect, careful=True)


def _copy_info(session: Session) -> dict[Any, Any]:
    """What the session remembers before a batch (services/cases/reactions.py, gates.py and
    others keep a batch's notes there), copied deep enough to put back."""
    return {
        k: copy.copy(v) if isinstance(v, dict | set | list) else v for k, v in session.info.items()
    }


def _apply_deferring(
    session: Session,
    ctx_factory: ContextFactory,
    events: Sequence[Claimed],
    now: datetime,
    dialect: str,
    *,
    careful: bool,
) -> dict[str, str]:
    ctx = ctx_factory(session)
    case_reactions.defer_reevaluations(session)
    try:
        return _apply(session, ctx, events, now, dialect, careful)
    finally:
        case_reactions.stop_deferring(session)


@contextlib.contextmanager
def _guarded(session: Session, careful: bool) -> Iterator[None]:
    """A savepoint when running event by event; else only the flush its release would make
    (the caller expunges the session's objects next, which would drop unflushed ones)."""
    if careful:
        with session.begin_nested():
            yield
    else:
        yield
        session.flush()


def _apply(
    session: Session,
    ctx: ProcessingContext,
    events: Sequence[Claimed],
    now: datetime,
    dialect: str,
    careful: bool,
) -> dict[str, str]:
    on_event = ctx.runtime.handlers.on_event
    take_batch_moves(session)
    items: list[tuple[Claimed, dict[str, Any] | None, list[Op] | None]] = []
    for event in events:
        data = _read(event)
        ops: list[Op] | None = None
        if data is not None:
            reactions = on_event.get(str(data.get("type")), ())
            if not reactions:
                ops = []  # stored; nothing to do
            elif isinstance(reactions[0], MirrorHandler):
                with contextlib.suppress(Exception):  # the one-event path records why
                    ops = reactions[0].ops(data, data["data"]["object"])
        items.append((event, data, ops))
    batch = MirrorBatch(session, dialect, keeps_writes=not careful)
    batch.prefetch(op for _, _, ops in items for op in ops or ())
    ctx.facts = gates.read_facts(session, [d for _, d, ops in items if d and ops is not None])
    statuses: dict[str, str] = {}
    run: list[Claimed] = []  # events whose rows are pending in `batch`

    def one(event: Claimed, data: dict[str, Any] | None, ops: list[Op] | None) -> None:
        ctx.changes = Changes()
        noted = _copy(case_reactions.deferred(session))

        def write_mirror(handler: MirrorHandler, payload: Payload) -> None:
            # Through the batch: its rows are read (and locked) already, and written one
            # statement per table, where the handler reads and writes each row on its own.
            if ops is None:  # its ops raised: the handler tells why
                handler(ctx, payload, payload["data"]["object"])
                return
            batch.commit(batch.plan(ops, ctx.changes))
            batch.flush()

        try:
            with _guarded(session, careful):
                payload = data if data is not None else json.loads(event.payload)
                process_payload(ctx, payload, write_mirror)
        except _DATABASE_GONE:
            raise  # the database went away: the whole batch stays pending
        except Exception as exc:  # a processing bug or bad data: this event alone, later
            if not careful:
                raise
            log.warning("processing event %s failed: %s", event.id, exc.__class__.__name__)
            # What it asked for is rolled back, what it made of the others' asks must be redone.
            case_reactions.restore_deferred(session, noted)
            statuses[event.id] = _record_failure(session, event, exc, now)
        else:
            statuses[event.id] = EventStatus.PROCESSED
        batch.forget(ctx.changes.mirrored, items=ops is None)
        assert ctx.facts is not None
        gates.grow_facts(session, ctx.facts, take_batch_moves(session), data)
        # The mirror is written with plain statements, which the session's loaded objects do
        # not see: the next event starts from what the database holds.
        session.expunge_all()
        cards.forget(session)

    def write_run() -> None:
        if not run:
            return
        pending = list(run)
        run.clear()
        try:
            with _guarded(session, careful):
                batch.flush()
        except _DATABASE_GONE:
            raise
        except Exception as exc:  # a value the database refused: find whose, one by one
            if not careful:
                raise
            log.warning("writing %d events' rows failed: %s", len(pending), exc.__class__.__name__)
            batch.forget_pending()
            for event, data, ops in [i for i in items if i[0] in pending]:
                one(event, data, ops)
            return
        statuses.update((event.id, EventStatus.PROCESSED) for event in pending)

    for event, data, ops in items:
        if ops is not None and data is not None and _mirror_only(ctx, batch, data, ops):
            run.append(event)
            continue
        if careful or ops is None:
            write_run()
            one(event, data, ops)
            continue
        # Without savepoints the run's rows need no statements of their own: they go with
        # this event's, which its mirror handler writes (through the batch) before any of its
        # reactions reads.
        one(event, data, ops)
        statuses.update((done.id, EventStatus.PROCESSED) for done in run)
        run.clear()
    write_run()
    _reevaluate_noted(session, ctx, events, statuses, now, careful)
    done = [event.id for event in events if statuses.get(event.id) == EventStatus.PROCESSED]
    if done:
        # Stamped as the batch ends, just before its commit, not when it was claimed: receipt
        # to `processed_at` is then how long an event really waited (a batch of 200 takes a
        # few hundred milliseconds, which the claim's time left out).
        done_at = max(now, ctx.runtime.clock.now())
        session.execute(_mark_processed(dialect), {"ids": done, "now": done_at})
    return statuses


_EVENTS: Any = StripeEvent.__table__


# A Core statement built once: the ORM's bulk UPDATE path cost more than the update itself, once
# per batch (and a demo's or an inline webhook's batch is one event).
@functools.cache
def _mark_processed(dialect: str) -> Any:
    return (
        update(_EVENTS)
        .where(in_list(_EVENTS.c.id, "ids", dialect))
        .values(
            status=EventStatus.PROCESSED,
            attempts=_EVENTS.c.attempts + 1,
            processed_at=bindparam("now", type_=_EVENTS.c.processed_at.type),
            last_error=None,
        )
    )


def _copy(noted: dict[int, case_reactions.Deferred]) -> dict[int, case_reactions.Deferred]:
    return {k: dataclasses.replace(v, events=list(v.events)) for k, v in noted.items()}


def _reevaluate_noted(
    session: Session,
    ctx: ProcessingContext,
    events: Sequence[Claimed],
    statuses: dict[str, str],
    now: datetime,
    careful: bool,
) -> None:
    """The batch's noted re-evaluations with the reminders each decision calls for. Not
    `careful`: all at once, no savepoint (a failure fails the batch, which runs again carefully).
    `careful`: all in one savepoint, or, if that fails, a savepoint per case; one that fails is
    rolled back and the events that asked for it are retried."""
    by_id = {event.id: event for event in events}
    every = _copy(case_reactions.deferred(session))
    if not careful:
        if every:
            with _guarded(session, careful):  # flushes: expunging would drop the decisions
                case_reactions.reevaluate_deferred(ctx.runtime, session, sorted(every))
                gates.sync_moved_cases(ctx.runtime, session, sorted(take_moved_cases(session)))
            session.expunge_all()
        return
    if len(every) > 1:  # all in one savepoint (two statements a case); one by one if it fails
        try:
            with session.begin_nested():
                case_reactions.reevaluate_deferred(ctx.runtime, session, sorted(every))
                gates.sync_moved_cases(ctx.runtime, session, sorted(take_moved_cases(session)))
        except _DATABASE_GONE:
            raise
        except Exception:
            take_moved_cases(session)
            case_reactions.restore_deferred(session, every)
        session.expunge_all()
    for case_id in sorted(case_reactions.deferred(session)):
        noted = case_reactions.deferred(session).get(case_id)
        if noted is None:
            continue
        try:
            with _guarded(session, careful):
                case_reactions.reevaluate_deferred(ctx.runtime, session, [case_id])
                gates.sync_moved_cases(ctx.runtime, session, sorted(take_moved_cases(session)))
        except _DATABASE_GONE:
            raise
        except Exception as exc:
            if not careful:
                raise
            log.warning("re-evaluating case %s failed: %s", case_id, exc.__class__.__name__)
            for event_id in dict.fromkeys(noted.events):
                event = by_id.get(event_id)
                if event is not None and statuses.get(event_id) == EventStatus.PROCESSED:
                    statuses[event_id] = _record_failure(session, event, exc, now)
        session.expunge_all()


def _read(event: Claimed) -> dict[str, Any] | None:
    if event.data is not None:
        return event.data
    try:
        data = json.loads(event.payload)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _mirror_only(
    ctx: ProcessingContext, batch: MirrorBatch, event: dict[str, Any], ops: list[Op]
) -> bool:
    """Whether the event needs none of its reactions, given what its mirror update would
    change; if so, its rows join the batch's pending ones."""
    ctx.changes = Changes()
    try:
        plan = batch.plan(ops, ctx.changes)
        obj = event["data"]["object"]
        reactions = ctx.runtime.handlers.on_event.get(str(event["type"]), ())[1:]
        if any(not isinstance(r, Gated) or r.needed(ctx, event, obj) for r in reactions):
            return False
    except Exception:  # the one-event path will tell what is wrong with it
        return False
    batch.commit(plan)
    return True


def _record_failure(session: Session, event: Claimed, exc: Exception, now: datetime) -> str:
    take_moved_cases(session)  # what the failed event moved was rolled back with it
    attempts = event.attempts + 1
    values: dict[str, Any] = {
        "attempts": attempts,
        "last_error": f"{exc.__class__.__name__}: {exc}"[:2000],
    }
    if attempts >= MAX_PROCESSING_ATTEMPTS:
        values["status"] = EventStatus.FAILED
    else:
        values.update(status=EventStatus.PENDING, next_attempt_at=now + backoff(attempts))
    session.execute(
        update(StripeEvent).where(StripeEvent.id == event.id).values(**values),
        execution_options={"synchronize_session": False},
    )
    return str(values["status"])


def _claim_due(session: Session, db: Database, now: datetime, limit: int) -> list[Claimed]:
    rows = session.execute(_claim_statement(db.is_postgres), {"now": now, "limit": limit})
    return [Claimed(r.id, r.attempts, None, r.payload) for r in rows]


_ORDER = (_EVENTS.c.next_attempt_at, _EVENTS.c.created, _EVENTS.c.id)


@functools.cache
def _claim_statement(lock: bool) -> Any:
    """The oldest due events: their ids are chosen (and locked) by a narrow subquery, then their
    bodies read. Sorting the whole backlog with the bodies in it spilled to disk on PostgreSQL
    (37 ms a batch with 13k events pending, a tenth of a batch's time)."""
    due = (
        select(_EVENTS.c.id)
        .where(_EVENTS.c.status == EventStatus.PENDING)
        .where(_EVENTS.c.next_attempt_at <= bindparam("now", type_=_EVENTS.c.next_attempt_at.type))
        .order_by(*_ORDER)
        .limit(bindparam("limit"))
    )
    if lock:
        due = due.with_for_update(skip_locked=True)
    columns = (_EVENTS.c.id, _EVENTS.c.attempts, _EVENTS.c.payload)
    return select(*columns).where(_EVENTS.c.id.in_(due.scalar_subquery())).order_by(*_ORDER)


def process_pending(
    db: Database, ctx_factory: ContextFactory, clock: Clock, limit: int = BATCH
) -> int:
    """Claim and process one batch of due pending events (new ones, and failed ones whose
    backoff has passed). Returns how many were claimed."""
    with batch_transaction(db) as session:
        now = clock.now()
        events = _claim_due(session, db, now, limit)
        apply(session, events, ctx_factory, now, db.dialect)
    return len(events)


@contextlib.contextmanager
def batch_transaction(db: Database) -> Iterator[Session]:
    """The transaction a batch of events is claimed and applied in, one batch at a time: on
    PostgreSQL across every process (the writers' turn, db.take_writers_turn), on SQLite
    within this one (its single writer does the rest)."""
    if db.is_postgres:
        with db.transaction() as session:
            take_writers_turn(session, exclusive=True)
            yield session
    else:
        with _SQLITE_CLAIMER, db.transaction() as session:
            yield session


def process_events(
    db: Database, event_ids: Sequence[str], ctx_factory: ContextFactory, clock: Clock
) -> dict[str, str]:
    """Process these stored events, in this order, if still pending (whatever their backoff).
    Returns each id's status afterwards ("missing" for an unknown id); an event another
    processor holds right now stays "pending"."""
    statuses: dict[str, str] = {}
    with batch_transaction(db) as session:
        query = select(
            StripeEvent.id, StripeEvent.attempts, StripeEvent.payload, StripeEvent.status
        ).where(StripeEvent.id.in_(list(event_ids)))
        if db.is_postgres:
            query = query.with_for_update(skip_locked=True)
        rows = {r.id: r for r in session.execute(query)}
        claimed = []
        for event_id in event_ids:
            row = rows.get(event_id)
            if row is None:
                statuses[event_id] = "missing"
            elif row.status != EventStatus.PENDING:
                statuses[event_id] = row.status
            else:
                claimed.append(Claimed(row.id, row.attempts, None, row.payload))
        statuses.update(apply(session, claimed, ctx_factory, clock.now(), db.dialect))
    for event_id in event_ids:  # locked by another processor: still pending for us
        statuses.setdefault(event_id, EventStatus.PENDING)
    return statuses


def process_stored_event(
    db: Database, event_id: str, ctx_factory: ContextFactory, clock: Clock
) -> str:
    """Process one stored event if still pending. Returns its status afterwards."""
    return process_events(db, [event_id], ctx_factory, clock)[event_id]


def redrive_due_events(
    db: Database, ctx_factory: ContextFactory, clock: Clock, limit: int = BATCH
) -> int:
    """Process every due pending event, batch by batch. Returns how many were tried."""
    total = 0
    while True:
        n = process_pending(db, ctx_factory, clock, limit)
        total += n
        if n < limit:
            return total
