"""Request guards for every dashboard page: ids in range, template helpers, HTML errors (CSRF
and security headers: `blueprint.py`)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import Response, abort, render_template
from markupsafe import Markup
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException

from recovery.i18n import major_units
from recovery.web import runtime
from recovery.web.dashboard import labels
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


def business_zone() -> ZoneInfo:
    """The zone the dashboard shows times in: `[business] timezone` of the rules (UTC)."""
    return ZoneInfo(runtime().rules.business.timezone)


def zone_abbreviation(at: datetime) -> str:
    """`UTC`, `CET`, `EDT`; a zone without a letter abbreviation gives `UTC+03`."""
    name = at.strftime("%Z")
    return f"UTC{name}" if name[:1] in "+-" else name


def when(at: datetime | None, with_time: bool = True, zone: ZoneInfo | None = None) -> Markup:
    """A time as the dashboard shows it: in the business's zone (or `zone`), labelled with it,
    in a `<time>` element that carries the exact instant."""
    if at is None:
        return Markup("")
    local = at.astimezone(zone or business_zone())
    shown = (
        f"{local:%Y-%m-%d %H:%M} {zone_abbreviation(local)}" if with_time else f"{local:%Y-%m-%d}"
    )
    instant = at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return Markup('<time datetime="{}">{}</time>').format(instant, shown)


def zone_label() -> str:
    zone = business_zone()
    return "in UTC" if zone.key == "UTC" else f"in the business's time zone, {zone.key}"


def full_emails() -> bool:
    """Admins see whole email addresses; viewers a masked one (`j***@example.com`)."""
    user = current_user()
    return bool(user and user.is_admin)


@bp.context_processor
def template_helpers() -> dict[str, Any]:
    return {
        "user": current_user(),
        "money": money,
        "when": when,
        "zone_label": zone_label(),
        "label": labels.label,
        "CATEGORY_LABELS": labels.CATEGORIES,
        "STATUS_WORDS": labels.CASE_STATUSES,
        "MESSAGE_STATUSES": labels.MESSAGE_STATUSES,
    }


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
