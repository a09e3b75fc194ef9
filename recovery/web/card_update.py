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
from datetime import datetime
from typing import Any

from flask import Blueprint, Flask, Response, current_app, redirect, render_template, request
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import generate_csrf, validate_csrf
from werkzeug.exceptions import HTTPException
from wtforms.validators import ValidationError

from recovery import i18n
from recovery.adapters.stripe.errors import GatewayError, NotFound
from recovery.models import CardUpdateLink, Customer, RecoveryCase
from recovery.runtime import Runtime
from recovery.services.card_update import completion, links
from recovery.web import i18n as web_i18n

log = logging.getLogger(__name__)

bp = Blueprint("card_update", __name__, url_prefix="/update")

# Per client address and per link. A person needs a handful of requests; guessing tokens (256
# bits) is hopeless anyway, so these only keep scripts from hammering the page and Stripe.
PER_IP = "60 per minute; 600 per hour"
PER_LINK = "30 per minute; 200 per day"
CHECKOUT_ORIGIN = "https://checkout.stripe.com"


class Refused(Exception):
    def __init__(self, kind: str, status: int) -> None:
        super().__init__(kind)
        self.kind, self.status = kind, status


def _open_link(
    session: Any, token: str, now: datetime, *, returning: bool = False
) -> CardUpdateLink:
    """The link behind `token`, or the friendly refusal page (404/410) raised."""
    link = links.resolve(session, token, now, returning=returning)
    if isinstance(link, links.Refusal):
        raise Refused(link.value, link.status)
    return link


def runtime() -> Runtime:
    rt: Runtime = current_app.extensions["recovery"]
    return rt


def _page(template: str, status: int = 200, **values: Any) -> Response:
    html = render_template(
        f"card_update/{template}", business=runtime().rules.business.name, **values
    )
    return Response(html, status=status, mimetype="text/html")


def _notice(kind: str, status: int) -> Response:
    return _page("notice.html", status, kind=kind)


def _speak(session: Any, link: CardUpdateLink) -> None:
    """The customer's language (Stripe `preferred_locales`, as their emails), else the
    browser's, else English. Pages refused before a link is known follow the browser."""
    customer = session.get(Customer, link.customer_id)
    preferred = list(customer.preferred_locales or []) if customer else []
    web_i18n.use_locale(
        i18n.negotiate([*preferred, *web_i18n.accepted_languages()]) or i18n.DEFAULT_LOCALE
    )


def _link_key() -> str:
    token = (request.view_args or {}).get("token", "")
    return links.token_hash(str(token))


# ---- views --------------------------------------------------------------------------------------


@bp.get("/<token>")
def show(token: str) -> Response:
    rt = runtime()
    with rt.db.transaction() as session:
        link = _open_link(session, token, rt.clock.now())
        _speak(session, link)
        links.record_open(session, link, rt.clock.now())
        summary = links.summary(session, link)
    return _page("update.html", summary=summary, token=token)


@bp.post("/<token>")
def start_checkout(token: str) -> Any:
    rt = runtime()
    with rt.db.transaction() as session:
        link = _open_link(session, token, rt.clock.now())
        case = session.get(RecoveryCase, link.case_id) if link.case_id is not None else None
        link_id, customer_id, round_ = link.id, link.customer_id, link.checkout_round
        metadata = {
            completion.METADATA_LINK: str(link.id),
            "recovery_case": str(case.id) if case else "",
            "subscription_id": (case.subscription_id if case else link.subscription_id) or "",
        }
    base = f"{rt.settings.public_url.rstrip('/')}/update/{token}"
    # The same attempt (a double click, a retry after a timeout) replays the same session;
    # a new round after a declined card gets a new one.
    for _ in range(2):
        checkout = rt.gateway.create_checkout_setup_session(
            customer_id=customer_id,
            success_url=f"{base}/done?session_id={{CHECKOUT_SESSION_ID}}",
            cancel_url=base,
            metadata=metadata,
            idempotency_key=f"card_update_link:{link_id}:checkout:{round_}",
        )
        with rt.db.transaction() as session:
            row = session.get(CardUpdateLink, link_id, with_for_update=True)
            assert row is not None
            row.checkout_session_id = str(checkout["id"])
            # A replay returns the first response as it was, so judge by `expires_at`: a
            # session that has expired since (sessions last 24 h, keys at least as long) is
            # replaced by the next round, with a fresh key.
            expires_at = int(checkout.get("expires_at") or 0)
            if checkout.get("status") != "expired" and expires_at > rt.clock.now().timestamp():
                break
            row.checkout_round = max(row.checkout_round, round_ + 1)
            round_ = row.checkout_round
    return redirect(str(checkout["url"]), code=303)


@bp.get("/<token>/done")
def done(token: str) -> Response:
    rt = runtime()
    session_id = request.args.get("session_id", "")
    if not session_id.startswith("cs_") or len(session_id) > 255:
        raise Refused("unknown", 404)
    with rt.db.transaction() as session:
        link = _open_link(session, token, rt.clock.now(), returning=True)
        link_id, customer_id = link.id, link.customer_id
        _speak(session, link)
    try:
        checkout = rt.gateway.retrieve_checkout_session(session_id)
    except NotFound as exc:
        raise Refused("unknown", 404) from exc
    card = completion.card_from_checkout(checkout, link_id, customer_id)
    if card is None:
        return _back_to_the_page(token)  # not finished, or not this link's session
    with rt.db.transaction() as session:
        row = session.get(CardUpdateLink, link_id)
        assert row is not None
        case = session.get(RecoveryCase, row.case_id) if row.case_id is not None else None
        if completion.already_done(row, card.setup_intent_id):
            return _outcome(token, session, row)  # a refresh: nothing is charged again
        target = completion.Target.of(row, case)
    result = completion.put_card_to_work(rt.gateway, target, card)
    with rt.db.transaction() as session:
        row = session.get(CardUpdateLink, link_id, with_for_update=True)
        assert row is not None
        case = None
        if target.case_id is not None:
            case = session.get(RecoveryCase, target.case_id, with_for_update=True)
        completion.record_outcome(session, row, case, result, rt.clock.now())
        return _outcome(token, session, row)


@bp.route("/<path:anything>", methods=["GET", "POST"])
def anything_else(anything: str) -> Response:
    raise Refused("unknown", 404)


def _back_to_the_page(token: str) -> Response:
    rt = runtime()
    with rt.db.transaction() as session:
        link = _open_link(session, token, rt.clock.now())
        _speak(session, link)
        summary = links.summary(session, link)
    return _page("update.html", summary=summary, token=token, unfinished=True)


def _outcome(token: str, session: Any, link: CardUpdateLink) -> Response:
    case = session.get(RecoveryCase, link.case_id) if link.case_id is not None else None
    summary = links.summary(session, link)
    return _page(
        "done.html",
        outcome=link.last_outcome,
        summary=summary,
        token=token,
        hosted_invoice_url=case.hosted_invoice_url if case else None,
        paid_amount=case.amount_recovered if case else 0,
    )


# ---- guards, headers, errors --------------------------------------------------------------------


@bp.before_request
def check_csrf() -> None:
    if request.method == "POST":
        try:
            validate_csrf(request.form.get("csrf_token"))
        except ValidationError as exc:
            raise Refused("retry", 400) from exc


@bp.context_processor
def csrf_helper() -> dict[str, Any]:
    return {"csrf_token": generate_csrf}


@bp.after_request
def security_headers(response: Response) -> Response:
    # The form posts here and is then redirected to Stripe Checkout, which Chromium checks
    # against form-action too.
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
        f"frame-ancestors 'none'; form-action 'self' {CHECKOUT_ORIGIN}"
    )
    # The URL is the customer's key: never send it on, never cache or index the page.
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Robots-Tag"] = "noindex, nofollow"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.errorhandler(Refused)
def refused(exc: Refused) -> Response:
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
