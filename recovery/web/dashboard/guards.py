"""Request guards for every dashboard page: ids in range, template helpers, HTML errors (CSRF
and security headers: `blueprint.py`)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from flask import Response, abort, render_template
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException

from recovery.i18n import major_units
from recovery.web.dashboard.auth import current_user
from recovery.web.dashboard.blueprint import bp
from recovery.web.security import CsrfFailed

log = logging.getLogger(__name__)

MESSAGES = {
    400: "The form had expired or was incomplete. Go back, reload the page and try again.",
    403: "Your account may look at this but not change it. Ask an admin.",
    404: "There is nothing here.",
    405: "That address does not take this kind of request.",
    429: "Too many attempts. Wait a minute and try again.",
    503: "The database is unavailable right now. Try again shortly.",
}


MAX_ID = 2**31 - 1  # the ids' column type: a larger number is no case, not a database error


@bp.url_value_preprocessor
def bounded_ids(endpoint: str | None, values: dict[str, Any] | None) -> None:
    if values and isinstance(values.get("case_id"), int) and values["case_id"] > MAX_ID:
        abort(404)


def money(amount: int | None, currency: str) -> str:
    if amount is None:
        return ""
    return f"{major_units(amount, currency):,} {currency.upper()}"


def when(at: datetime | None, with_time: bool = True) -> str:
    if at is None:
        return ""
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M" if with_time else "%Y-%m-%d")


@bp.context_processor
def template_helpers() -> dict[str, Any]:
    return {"user": current_user(), "money": money, "when": when}


def error_page(status: int, message: str | None = None) -> Response:
    html = render_template(
        "dashboard/error.html", status=status, message=message or MESSAGES.get(status, "Error.")
    )
    return Response(html, status=status, mimetype="text/html")


@bp.errorhandler(CsrfFailed)
def csrf_failed(exc: CsrfFailed) -> Response:
    return error_page(400)


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException) -> Response:
    return error_page(exc.code or 400)


@bp.errorhandler(DBAPIError)
def database_down(exc: DBAPIError) -> Response:
    log.error("dashboard: database unavailable: %s", exc.__class__.__name__)
    return error_page(503)
