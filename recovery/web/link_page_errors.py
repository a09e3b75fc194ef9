"""The error pages every subscriber page opened from a link shares (pause, annual offer,
win-back, unsubscribe): an expired form token, Stripe unreachable, a bad URL, anything
unexpected - each a short notice in the browser's language, never a stack trace."""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Blueprint, Response
from werkzeug.exceptions import HTTPException

from recovery.adapters.stripe.errors import GatewayError
from recovery.web import i18n as web_i18n
from recovery.web import security

log = logging.getLogger(__name__)

Notice = Callable[[str, int], Response]


def register(bp: Blueprint, notice: Notice, page: str) -> None:
    """Answer `bp`'s common failures with `notice(kind, status)`; `page` names it in the log."""

    @bp.errorhandler(security.CsrfFailed)
    def csrf_failed(exc: security.CsrfFailed) -> Response:
        web_i18n.speak_customers_language([])
        return notice("retry", 400)

    @bp.errorhandler(GatewayError)
    def stripe_failed(exc: GatewayError) -> Response:
        log.warning("%s page: Stripe call failed: %s", page, exc.__class__.__name__)
        web_i18n.speak_customers_language([])
        return notice("unavailable", 503)

    @bp.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        web_i18n.speak_customers_language([])
        return notice("unknown" if exc.code == 404 else "unavailable", exc.code or 400)

    @bp.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("%s page: unexpected error", page)
        web_i18n.speak_customers_language([])
        return notice("unavailable", 500)
