"""Cancel sessions in the JSON API (/api/v1, bearer keys).

POST /api/v1/cancel-sessions           start a session -> {"id", "url", "expires_at"}
GET  /api/v1/cancel-sessions           ?since=&outcome=&limit=&starting_after=, newest first
GET  /api/v1/cancel-sessions/<id>      one session
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from flask import Response, jsonify, request

from recovery.services.cancel import lookup
from recovery.services.cancel.flow import (
    MAX_METADATA_KEYS,
    FlowError,
    StartRequest,
    session_url,
    start_session,
)
from recovery.services.cancel.records import OUTCOME_FILTERS
from recovery.services.reporting.paging import UnknownAnchor
from recovery.web import runtime
from recovery.web.api.blueprint import bad, bp, int_arg, with_json
from recovery.web.errors import ApiError

CUSTOMER_ID = re.compile(r"^cus_[A-Za-z0-9_]{1,250}$")
SUBSCRIPTION_ID = re.compile(r"^sub_[A-Za-z0-9_]{1,250}$")
LOCALE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8}){0,2}$")


def _string(body: dict[str, Any], key: str, pattern: re.Pattern[str] | None = None) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value or (pattern and not pattern.match(value)):
        raise bad(f"{key} is required and must be a valid id or string")
    return value


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_METADATA_KEYS:
        raise bad(f"metadata must be an object of at most {MAX_METADATA_KEYS} keys")
    for key, item in value.items():
        if not isinstance(item, str) or len(key) > 40 or len(item) > 500:
            raise bad("metadata keys (<= 40 chars) must map to strings (<= 500 chars)")
    return dict(value)


@bp.post("/cancel-sessions")
def create_session() -> tuple[Response, int]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise bad("send a JSON object")
    unknown = sorted(set(body) - {"customer", "subscription", "return_url", "locale", "metadata"})
    if unknown:
        raise bad(f"unknown parameter: {unknown[0]}")
    locale = body.get("locale")
    if locale is not None and (not isinstance(locale, str) or not LOCALE.match(locale)):
        raise bad("locale must be a language tag such as de, pt-BR or fr_CA")
    req = StartRequest(
        customer_id=_string(body, "customer", CUSTOMER_ID),
        subscription_id=_string(body, "subscription", SUBSCRIPTION_ID),
        return_url=_string(body, "return_url"),
        locale=locale,
        metadata=_metadata(body.get("metadata")),
    )
    rt = runtime()
    try:
        row, token = start_session(rt, req)
    except FlowError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from exc
    payload = {
        "id": row.id,
        "url": session_url(rt.settings, token),
        "expires_at": row.expires_at.isoformat(),
    }
    return jsonify(payload), 201


def _since(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    if raw.isdigit() and len(raw) <= 12:
        return datetime.fromtimestamp(int(raw), UTC)
    # An unencoded "+" in a query string arrives as a space.
    try:
        parsed = datetime.fromisoformat(raw.strip().replace(" ", "+").replace("Z", "+00:00"))
    except ValueError as exc:
        raise bad("since must be unix seconds or an ISO 8601 time") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@bp.get("/cancel-sessions")
@with_json
def list_sessions() -> dict[str, Any]:
    outcome = request.args.get("outcome")
    if outcome is not None and outcome not in OUTCOME_FILTERS:
        raise bad(f"outcome must be one of {', '.join(sorted(OUTCOME_FILTERS))}")
    limit = int_arg("limit", 100, 1, 500)
    since = _since(request.args.get("since"))
    try:
        page = lookup.list_sessions(
            runtime(),
            since=since,
            outcome=outcome,
            limit=limit,
            starting_after=request.args.get("starting_after"),
        )
    except UnknownAnchor as exc:
        raise bad("starting_after is not a known cancel session id") from exc
    return {"data": page.rows, "has_more": page.has_more}


@bp.get("/cancel-sessions/<session_id>")
@with_json
def get_session(session_id: str) -> dict[str, Any]:
    found = lookup.session_detail(runtime(), session_id)
    if found is None:
        raise ApiError(404, "not_found", f"no cancel session {session_id}")
    return found
