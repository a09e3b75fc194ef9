"""The pause page a final notice links to (`retry.end_of_dunning = "offer_pause"`):
`/pause/<token>`, opened without signing in. GET shows what a pause does and one button per
length; POST (CSRF-checked) pauses - once, whatever the clicks and tabs. No script.

Views parse, call a service, render; no transaction is held across a Stripe call.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Flask, Response, render_template, request

from recovery.services.pauses import offer
from recovery.web import i18n as web_i18n
from recovery.web import link_page_errors, runtime, security

log = logging.getLogger(__name__)

bp = Blueprint("pause", __name__, url_prefix="/pause")
security.protect(
    bp,
    csp=security.subscriber_csp(["'self'"]),
    headers={**security.SUBSCRIBER_HEADERS, **security.NOT_INDEXED},
)


def _page(template: str, status: int = 200, **values: Any) -> Response:
    html = render_template(f"pause/{template}", business=runtime().rules.business.name, **values)
    return Response(html, status=status, mimetype="text/html")


def _notice(kind: str, status: int) -> Response:
    return _page("notice.html", status, kind=kind)


@bp.get("/<token>")
def show(token: str) -> Response:
    view = offer.open_page(runtime(), token)
    web_i18n.speak_customers_language(view.locales)
    return _page("pause.html", view=view, token=token)


@bp.post("/<token>")
def accept(token: str) -> Response:
    raw = request.form.get("months", "")
    months = int(raw) if raw.isdigit() and len(raw) <= 2 else 0
    view = offer.accept(runtime(), token, months)
    web_i18n.speak_customers_language(view.locales)
    return _page("pause.html", view=view, token=token)


@bp.errorhandler(offer.Refused)
def refused(exc: offer.Refused) -> Response:
    web_i18n.speak_customers_language(exc.locales)
    return _notice(exc.kind, exc.status)


link_page_errors.register(bp, _notice, "pause")


def init_app(app: Flask) -> None:
    """Register the blueprint under the card-update page's rate limits per address."""
    limiter = app.extensions.get("card_update_limiter")
    if limiter is not None:
        limiter.limit("60 per minute; 600 per hour", scope="pause_ip")(bp)
    app.register_blueprint(bp)
