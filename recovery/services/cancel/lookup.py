"""Cancel sessions for the JSON API: a page of records (GET /api/v1/cancel-sessions), newest
first, or one record (GET /api/v1/cancel-sessions/<id>), as `records.session_json` shapes them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from recovery.models import CancelSession
from recovery.runtime import Runtime
from recovery.services.cancel.records import list_query, session_json
from recovery.services.reporting import paging

KEYS = (CancelSession.created_at, CancelSession.id)


def list_sessions(
    rt: Runtime,
    *,
    since: datetime | None,
    outcome: str | None,
    limit: int,
    starting_after: str | None,
) -> paging.Slice[dict[str, Any]]:
    """A page of sessions, newest first, after the session `starting_after` (an id;
    paging.UnknownAnchor when there is none such)."""
    now = rt.clock.now()

    def record(found: paging.AnyRow) -> dict[str, Any]:
        return session_json(found[0], now)

    with rt.db.reading() as session:
        after = paging.anchor_of(session, KEYS, starting_after) if starting_after else None
        query = list_query(since, outcome, now)
        return paging.newest_first(session, query, KEYS, after=after, limit=limit, row=record)


def session_detail(rt: Runtime, session_id: str) -> dict[str, Any] | None:
    with rt.db.reading() as session:
        row = session.get(CancelSession, session_id)
        return None if row is None else session_json(row, rt.clock.now())
