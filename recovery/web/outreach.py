"""The subscriber pages of outreach, each opened from an email without signing in:

- `/annual/<token>`: an annual-term offer - the prices, the saving and what Stripe will charge
  and when; POST switches (CSRF-checked, idempotent), POST `/decline` says "no thanks";
- `/come-back/<token>`: a win-back - POST starts Stripe Checkout in subscription mode;
- `/unsubscribe/<token>`: GET shows, POST unsubscribes. RFC 8058's one-click POST comes from a
  mail client, without cookies or a CSRF token: this blueprint takes POSTs without CSRF, the
  unguessable token being the credential (docs/messaging.md#one-click-unsubscribe).

Views parse, call a service, render; no transaction is held across a Stripe call.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Flask, Response, redirect, render_template, request

from recovery.services.outreach import term_offers, unsubscribe, win_back
from recovery.web import i18n as web_i18n
from recovery.web import link_page_errors, runtime, security

log = logging.getLogger(__name__)

annual = Blueprint("annual", __name__, url_prefix="/annual")
come_back = Blueprint("come_back", __name__, url_prefix="/come-back")
unsubscribing = Blueprint("unsubscribe", __name__, url_prefix="/unsubscribe")
CHECKOUT_ORIGIN = "https://checkout.stripe.com"
HEADERS = {**security.SUBSCRIBER_HEADERS, **security.NOT_INDEXED}

security.protect(annual, csp=security.subscriber_csp(["'self'"]), headers=HEADERS)
security.protect(
    come_back, csp=security.subscriber_csp(["'self'", CHECKOUT_ORIGIN]), headers=HEADERS
)


@unsubscribing.after_request
def _unsubscribe_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = security.subscriber_csp(["'self'"])
    response.headers.update(HEADERS)
    return response


def _page(template: str, status: int = 200, **values: Any) -> Response:
    html = render_template(f"outreach/{template}", business=runtime().rules.business.name, **values)
    return Response(html, status=status, mimetype="text/html")


def _notice(kind: str, status: int) -> Response:
    return _page("notice.html", status, kind=kind)


# ---- annual-term offers -------------------------------------------------------------------------


@annual.get("/<token>")
def show_offer(token: str) -> Response:
    view = term_offers.open_page(runtime(), token)
    web_i18n.speak_customers_language(view.locales)
    return _page("annual.html", view=view, token=token)


@annual.post("/<token>")
def accept_offer(token: str) -> Response:
    raw = request.form.get("proration_date", "")
    stamp = int(raw) if raw.isdigit() and len(raw) <= 12 else None
    view = term_offers.accept(runtime(), token, stamp)
    web_i18n.speak_customers_language(view.locales)
    return _page("annual.html", view=view, token=token)


@annual.post("/<token>/decline")
def decline_offer(token: str) -> Response:
    view = term_offers.decline(runtime(), token)
    web_i18n.speak_customers_language(view.locales)
    return _page("annual.html", view=view, token=token)


# ---- win-back -----------------------------------------------------------------------------------


@come_back.get("/<token>")
def show_come_back(token: str) -> Response:
    view = win_back.open_page(runtime(), token)
    web_i18n.speak_customers_language(view.locales)
    return _page("come_back.html", view=view, token=token)


@come_back.post("/<token>")
def restart(token: str) -> Any:
    rt = runtime()
    url = win_back.start_checkout(rt, token, f"{rt.settings.public_url}/come-back/{token}")
    if url is None:
        return redirect(f"/come-back/{token}", code=303)
    return redirect(url, code=303)


@come_back.get("/<token>/done")
def restarted(token: str) -> Response:
    view = win_back.finished(runtime(), token)
    web_i18n.speak_customers_language(view.locales)
    return _page("come_back.html", view=view, token=token, returned=True)


# ---- unsubscribe --------------------------------------------------------------------------------


@unsubscribing.get("/<token>")
def show_unsubscribe(token: str) -> Response:
    standing = unsubscribe.page(runtime(), token)
    web_i18n.speak_customers_language(standing.locales)
    return _page("unsubscribe.html", standing=standing, token=token)


@unsubscribing.post("/<token>")
def do_unsubscribe(token: str) -> Response:
    one_click = request.form.get("List-Unsubscribe") == "One-Click"
    standing = unsubscribe.unsubscribe(runtime(), token, one_click=one_click)
    web_i18n.speak_customers_language(standing.locales)
    return _page("unsubscribe.html", standing=standing, token=token)


# ---- errors -------------------------------------------------------------------------------------


def _errors(bp: Blueprint) -> None:
    @bp.errorhandler(term_offers.Refused)
    @bp.errorhandler(win_back.Refused)
    @bp.errorhandler(unsubscribe.Refused)
    def refused(exc: Exception) -> Response:
        web_i18n.speak_customers_language([])
        return _notice("unknown", 404)

    link_page_errors.register(bp, _notice, "outreach")


for _bp in (annual, come_back, unsubscribing):
    _errors(_bp)


def init_app(app: Flask) -> None:
    """Register the three blueprints, under the card-update page's rate limits per address."""
    limiter = app.extensions.get("card_update_limiter")
    for bp in (annual, come_back, unsubscribing):
        if limiter is not None:
            limiter.limit("60 per minute; 600 per hour", scope="outreach_ip")(bp)
        app.register_blueprint(bp)
