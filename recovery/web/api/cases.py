"""GET /api/v1/cases and /api/v1/cases/<id>: recovery cases with their whole timeline."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import request

from recovery.services.cases import records
from recovery.services.reporting import case_list
from recovery.services.reporting.paging import UnknownAnchor
from recovery.web import runtime
from recovery.web.api.blueprint import bad, bp, int_arg, with_json
from recovery.web.errors import ApiError


def _since() -> datetime | None:
    raw = request.args.get("since")
    if raw is None:
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise bad("since must be an ISO 8601 date or time") from exc
    if parsed.tzinfo is None:
        raise bad("since needs a time zone, e.g. ...Z or +00:00")
    return parsed


@bp.get("/cases")
@with_json
def list_cases() -> dict[str, Any]:
    status = request.args.get("status")
    if status is not None and status not in case_list.STATUS_FILTERS:
        allowed = ", ".join(case_list.STATUS_FILTERS)
        raise bad(f"status must be one of {allowed} (open: every case still in progress)")
    since = _since()
    limit = int_arg("limit", 100, 1, 500)
    try:
        page = records.list_cases(
            runtime(),
            status=status,
            since=since,
            customer=request.args.get("customer") or None,
            limit=limit,
            starting_after=request.args.get("starting_after"),
        )
    except UnknownAnchor as exc:
        raise bad("starting_after is not a known case id") from exc
    return {"data": page.rows, "has_more": page.has_more}


@bp.get("/cases/<int:case_id>")
@with_json
def get_case(case_id: int) -> dict[str, Any]:
    found = records.case_detail(runtime(), case_id)
    if found is None:
        raise ApiError(404, "not_found", f"no case {case_id}")
    return found
