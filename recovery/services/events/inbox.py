"""Store received Stripe events (insert-or-ignore on the event id) and process them.

A new event is stored and applied in one transaction, the processing inside a SAVEPOINT: if
processing raises, only the savepoint is rolled back and the event is committed `pending` with
its error, and the worker re-drives it with backoff until it succeeds or is parked as `failed`.
The webhook answers 2xx only after that commit, so a crash before it loses nothing either:
nothing was acknowledged, and Stripe delivers again. One commit per event instead of two (store,
then process) roughly halves the cost of a webhook.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import InterfaceError, OperationalError, PendingRollbackError
from sqlalchemy.orm import Session

from recovery.adapters.clock import Clock
from recovery.db import Database, insert_or_ignore, update_by_key
from recovery.domain.stripe_objects.fields import MAX_TIMESTAMP
from recovery.models import EventStatus, StripeEvent
from recovery.runtime import ContextFactory, ProcessingContext
from recovery.services.events.dispatch import process_payload

log = logging.getLogger(__name__)

# A freshly stored event is processed by the request that stored it; the worker only steps in
# once this grace period has passed, so the two do not race on a healthy event.
REDRIVE_GRACE = timedelta(seconds=60)
MAX_PROCESSING_ATTEMPTS = 8


class InvalidEvent(ValueError):
    """The body is JSON but not a Stripe event."""


@dataclass(frozen=True)
class ParsedEvent:
    id: str
    type: str
    created: int
    api_version: str | None
    livemode: bool
    object_id: str | None


def parse_event(body: bytes) -> tuple[ParsedEvent, dict[str, Any]]:
    """Parse and sanity-check a webhook body. Raises ValueError (InvalidEvent) with a reason."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEvent(f"body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidEvent("body is not a JSON object")
    evt_id, evt_type, created = data.get("id"), data.get("type"), data.get("created")
    if not isinstance(evt_id, str) or not evt_id or len(evt_id) > 255:
        raise InvalidEvent("event has no valid id")
    if not isinstance(evt_type, str) or not evt_type or len(evt_type) > 100:
        raise InvalidEvent("event has no valid type")
    if not isinstance(created, int) or isinstance(created, bool):
        raise InvalidEvent("event has no valid created timestamp")
    if not 0 <= created <= MAX_TIMESTAMP:
        raise InvalidEvent("event has no valid created timestamp")
    obj = data.get("data", {}).get("object") if isinstance(data.get("data"), dict) else None
    if not isinstance(obj, dict):
        raise InvalidEvent("event has no data.object")
    object_id = obj.get("id") if isinstance(obj.get("id"), str) else None
    api_version = data.get("api_version")
    return (
        ParsedEvent(
            id=evt_id,
            type=evt_type,
            created=created,
            api_version=api_version[:40] if isinstance(api_version, str) else None,
            livemode=data.get("livemode") is True,
            object_id=object_id[:255] if object_id else None,
        ),
        data,
    )


def store_event(session: Session, event: ParsedEvent, body: bytes, now: datetime) -> bool:
    """Insert the raw event unless its id is already stored. True when it is new."""
    values = {
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
        "next_attempt_at": now + REDRIVE_GRACE,
    }
    return insert_or_ignore(session, StripeEvent, values)


def backoff(attempts: int, rng: random.Random | None = None) -> timedelta:
    """30 s, 1 min, 2 min ... capped at 6 h, with +-20 % jitter so a burst does not re-align."""
    base = min(30 * 2 ** max(attempts - 1, 0), 6 * 3600)
    jitter = (rng or random).uniform(0.8, 1.2)
    return timedelta(seconds=base * jitter)


def process_stored_event(
    db: Database, event_id: str, ctx_factory: ContextFactory, clock: Clock
) -> str:
    """Process one stored event if still pending. Returns its status afterwards.

    The event row is locked for the whole processing transaction, so two processors (the
    request and a worker, or two workers) never apply one event at the same time.
    """
    try:
        with db.transaction() as session:
            row = session.execute(
                select(StripeEvent).where(StripeEvent.id == event_id).with_for_update()
            ).scalar_one_or_none()
            if row is None:
                return "missing"
            if row.status == EventStatus.PROCESSED:
                return row.status
            ctx: ProcessingContext = ctx_factory(session)
            process_payload(ctx, json.loads(row.payload))
            row.status = EventStatus.PROCESSED
            row.attempts += 1
            row.processed_at = clock.now()
            row.last_error = None
            return row.status
    except Exception as exc:  # processing bugs and outages alike: record, back off, retry
        log.warning("processing event %s failed: %s", event_id, exc.__class__.__name__)
        return _record_failure(db, event_id, exc, clock)


def _record_failure(db: Database, event_id: str, exc: Exception, clock: Clock) -> str:
    with db.transaction() as session:
        row = session.get(StripeEvent, event_id, with_for_update=True)
        if row is None:
            return "missing"
        row.attempts += 1
        row.last_error = f"{exc.__class__.__name__}: {exc}"[:2000]
        if row.attempts >= MAX_PROCESSING_ATTEMPTS:
            row.status = EventStatus.FAILED
        else:
            row.status = EventStatus.PENDING
            row.next_attempt_at = clock.now() + backoff(row.attempts)
        return row.status


def due_event_ids(db: Database, now: datetime, limit: int = 100) -> list[str]:
    with db.transaction() as session:
        return list(
            session.scalars(
                select(StripeEvent.id)
                .where(StripeEvent.status == EventStatus.PENDING)
                .where(StripeEvent.next_attempt_at <= now)
                .order_by(StripeEvent.created, StripeEvent.id)
                .limit(limit)
            )
        )


def redrive_due_events(
    db: Database, ctx_factory: ContextFactory, clock: Clock, limit: int = 100
) -> int:
    """Process events left pending past their next attempt time. Returns how many were tried."""
    ids = due_event_ids(db, clock.now(), limit)
    for event_id in ids:
        process_stored_event(db, event_id, ctx_factory, clock)
    return len(ids)


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
    """Store one verified event and (when `process`) apply it. Returns "duplicate" for an event
    already stored, else its status once committed: processed, or pending (left to the worker).
    """
    now = clock.now()
    error: Exception | None = None
    with db.transaction() as session:
        if not store_event(session, event, body, now):
            return "duplicate"
        if not process:
            return EventStatus.PENDING
        try:
            with session.begin_nested():
                process_payload(ctx_factory(session), data)
        except (OperationalError, InterfaceError, PendingRollbackError):
            raise  # the database went away: nothing can be stored, so nothing is acknowledged
        except Exception as exc:  # a processing bug or bad data: keep the event, retry later
            error = exc
        values: dict[str, Any] = {"attempts": 1}
        if error is None:
            values.update(status=EventStatus.PROCESSED, processed_at=clock.now())
        else:
            values.update(
                last_error=f"{error.__class__.__name__}: {error}"[:2000],
                next_attempt_at=now + backoff(1),
            )
        update_by_key(session, StripeEvent, event.id, values)
    if error is not None:
        log.warning("processing event %s failed: %s", event.id, error.__class__.__name__)
        return EventStatus.PENDING
    return EventStatus.PROCESSED


def receive_events(
    db: Database, bodies: Iterable[bytes], ctx_factory: ContextFactory, clock: Clock
) -> list[bool]:
    """Store then process each body, as the webhook endpoint does (without the signature).
    Returns, per body, whether it was new."""
    results = []
    for body in bodies:
        event, data = parse_event(body)
        status = receive_event(db, event, data, body, ctx_factory, clock)
        results.append(status != "duplicate")
    return results
