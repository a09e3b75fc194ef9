"""GET /api/v1/events: received Stripe events, newest first."""

from __future__ import annotations

from typing import Any

from flask import request

from recovery.services.events import listing
from recovery.services.reporting.paging import UnknownAnchor
from recovery.web import runtime
from recovery.web.api.blueprint import bad, bp, int_arg, with_json


@bp.get("/events")
@with_json
def list_events() -> dict[str, Any]:
    status = request.args.get("status")
    if status is not None and status not in listing.STATUSES:
        raise bad("status must be processed, failed or pending")
    limit = int_arg("limit", 100, 1, 500)
    try:
        page = listing.list_events(
            runtime(),
            status=status,
            limit=limit,
            starting_after=request.args.get("starting_after"),
        )
    except UnknownAnchor as exc:
        raise bad("starting_after is not a known event id") from exc
    return {"data": page.rows, "has_more": page.has_more}
