"""Received Stripe events for the JSON API (GET /api/v1/events): newest first, by status."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from recovery.models import EventStatus, StripeEvent
from recovery.runtime import Runtime
from recovery.services.reporting import paging

STATUSES = tuple(s.value for s in EventStatus)
KEYS = (StripeEvent.received_at, StripeEvent.id)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def event_json(e: StripeEvent) -> dict[str, Any]:
    return {
        "id": e.id,
        "type": e.type,
        "created": e.created,
        "object_id": e.object_id,
        "status": e.status,
        "attempts": e.attempts,
        "received_at": _iso(e.received_at),
        "processed_at": _iso(e.processed_at),
        "next_attempt_at": _iso(e.next_attempt_at) if e.status == EventStatus.PENDING else None,
        "last_error": e.last_error,
    }


def _row(found: paging.AnyRow) -> dict[str, Any]:
    return event_json(found[0])


def list_events(
    rt: Runtime, *, status: str | None, limit: int, starting_after: str | None
) -> paging.Slice[dict[str, Any]]:
    """A page of events, newest received first, after the event `starting_after` (an id;
    paging.UnknownAnchor when there is none such)."""
    query = select(StripeEvent)
    if status:
        query = query.where(StripeEvent.status == status)
    with rt.db.reading() as session:
        after = paging.anchor_of(session, KEYS, starting_after) if starting_after else None
        return paging.newest_first(session, query, KEYS, after=after, limit=limit, row=_row)
