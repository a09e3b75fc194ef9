"""The login-free card-update page a customer reaches from a reminder: `/update/<token>`.

GET shows the business, the amount due and since when, the failing card's brand and last four
digits - nothing more - and one button. POST (CSRF-checked) starts a Stripe Checkout Session in
setup mode and redirects there; Stripe collects the card (and offers wallets where it can). The
return page verifies the session with the Stripe API, puts the card to work and shows the outcome.
Views parse, call a service, render; database work happens in short transactions and no
transaction is held open across a Stripe call.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from flask import Blueprint, Flask, Response, redirect, render_template, request
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address
from werkzeug.exceptions import HTTPException

from recovery.adapters.stripe.errors import GatewayError
from recovery.services.card_update import checkout, links
from recovery.services.card_update.checkout import Refused
from recovery.web import i18n as web_i18n
from recovery.web import runtime, security

log = logging.getLogger(__name__)

bp = Blueprint("card_update", __name__, url_prefix="/update")

# Per client address and per link. A person needs a handful of requests; guessing tokens (256
# bits) is hopeless anyway, so these only keep scripts from hammering the page and Stripe.
PER_IP = "60 per minute; 600 per hour"
PER_LINK = "30 per minute; 200 per day"
CHECKOUT_ORIGIN = "https://checkout.stripe.com"

# The form posts here and is then redirected to Stripe Checkout, which Chromium checks against
# form-action too. The URL is the customer's key: never sent on, cached or indexed.
security.protect(
    bp,
    csp=security.subscriber_csp(["'self'", CHECKOUT_ORIGIN]),
    headers={**security.SUBSCRIBER_HEADERS, **security.NOT_INDEXED},
)


def _page(template: str, status: int = 200, **values: Any) -> Response:
    html = render_template(
        f"card_update/{template}", business=runtime().rules.business.name, **values
    )
    return Response(html, status=status, mimetype="text/html")


def _notice(kind: str, status: int) -> Response:
    return _page("notice.html", status, kind=kind)


def _link_key() -> str:
    token = (request.view_args or {}).get("token", "")
    return links.token_hash(str(token))


# ---- views --------------------------------------------------------------------------------------


@bp.get("/<token>")
def show(token: str) -> Response:
    page = checkout.open_page(runtime(), token)
    web_i18n.speak_customers_language(page.preferred_locales)
    return _page("update.html", summary=page.summary, token=token, bank=page.bank)


@bp.post("/<token>/bank")
def bank_called(token: str) -> Response:
    """ "I've contacted my bank - try again" (CSRF-checked like every POST here)."""
    page = checkout.bank_called(runtime(), token)
    web_i18n.speak_customers_language(page.preferred_locales)
    return _page("update.html", summary=page.summary, token=token, bank=page.bank)


@bp.post("/<token>")
def start_checkout(token: str) -> Any:
    return redirect(checkout.start(runtime(), token), code=303)


@bp.get("/<token>/done")
def done(token: str) -> Response:
    rt = runtime()
    session_id = request.args.get("session_id", "")
    if not session_id.startswith("cs_") or len(session_id) > 255:
        raise Refused("unknown", 404)
    back = checkout.returning(rt, token)
    web_i18n.speak_customers_language(back.preferred_locales)
    finished = checkout.finish(rt, back, session_id)
    if finished is None:  # not finished, or not this link's session: back to the page
        page = checkout.page_again(rt, token)
        web_i18n.speak_customers_language(page.preferred_locales)
        return _page(
            "update.html", summary=page.summary, token=token, unfinished=True, bank=page.bank
        )
    return _page(
        "done.html",
        outcome=finished.outcome,
        summary=finished.summary,
        token=token,
        hosted_invoice_url=finished.hosted_invoice_url,
        paid_amount=finished.paid_amount,
    )


@bp.route("/<path:anything>", methods=["GET", "POST"])
def anything_else(anything: str) -> Response:
    raise Refused("unknown", 404)


# ---- errors -------------------------------------------------------------------------------------


@bp.errorhandler(security.CsrfFailed)
def csrf_failed(exc: security.CsrfFailed) -> Response:
    return _notice("retry", 400)


@bp.errorhandler(Refused)
def refused(exc: Refused) -> Response:
    web_i18n.speak_customers_language(
        exc.preferred_locales
    )  # the customer's language, when the link says who they are
    return _notice(exc.kind, exc.status)


@bp.errorhandler(RateLimitExceeded)
def too_many(exc: RateLimitExceeded) -> Response:
    response = _notice("slow_down", 429)
    response.headers["Retry-After"] = "60"
    return response


@bp.errorhandler(GatewayError)
def stripe_failed(exc: GatewayError) -> Response:
    log.warning("card update: Stripe call failed: %s", exc.__class__.__name__)
    return _notice("unavailable", 503)


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException) -> Response:
    return _notice("unknown" if exc.code == 404 else "unavailable", exc.code or 400)


@bp.errorhandler(Exception)
def unexpected(exc: Exception) -> Response:
    log.exception("card update: unexpected error")
    return _notice("unavailable", 500)


def init_app(app: Flask) -> None:
    """Register the blueprint with its rate limits. Limits live in memory by default (one
    machine); point RECOVERY_RATELIMIT_STORAGE_URL at Redis or Memcached (e.g.
    `redis://host:6379`) when several web processes or hosts serve these pages."""
    links.link_days(app.extensions["recovery"].rules)  # a bad rules value fails at start-up
    storage = app.config.get("RATELIMIT_STORAGE_URI") or os.environ.get(
        "RECOVERY_RATELIMIT_STORAGE_URL", "memory://"
    )
    limiter = Limiter(
        get_remote_address,
        app=app,
        storage_uri=storage,
        strategy="moving-window",
        key_prefix="card_update",
        enabled=bool(app.config.get("RATELIMIT_ENABLED", True)),
    )
    limiter.limit(PER_IP, key_func=get_remote_address, scope="card_update_ip")(bp)
    limiter.limit(PER_LINK, key_func=_link_key, scope="card_update_link")(bp)
    app.extensions["card_update_limiter"] = limiter
    app.register_blueprint(bp)
