"""Demo-only pages (`recovery demo`): registered only with RECOVERY_DEMO=1, refused in production.

- `/demo/outbox`: every email and SMS the service "sent" (newest first), with their card-update
  links filled in and clickable - the demo has no SMTP server or Twilio account.
- `/demo/checkout/<id>`: a stand-in for Stripe Checkout in setup mode, with two test cards (one
  works, one is declined); it completes the session in the Stripe fake and returns to the
  session's success_url, as Stripe does.
- `/demo/invoice/<id>`: a stand-in for Stripe's hosted invoice page (pay with a test card).
- `/demo/cancel/<subscription>`: starts a cancel-flow session the way a business would
  (server to server) and sends the visitor to it.
"""

from __future__ import annotations

import os
import re
from typing import Any

from flask import Blueprint, Flask, Response, abort, redirect, render_template, request, url_for
from markupsafe import Markup, escape

from recovery.adapters.stripe.errors import GatewayError
from recovery.config import ConfigError, Settings
from recovery.services.cancel import flow as cancel_flow
from recovery.services.events import mirror_reads
from recovery.services.messaging import outbox_log
from recovery.web import runtime, security
from recovery.web.errors import error_response

DEMO_ENV = "RECOVERY_DEMO"
URL = re.compile(r"https?://[^\s<>\"']+")
# The stand-in Checkout's test cards (Stripe's own test numbers,
# https://docs.stripe.com/testing#declined-payments): last four -> number shown, what charging
# it does. An expired card asks for another card: a case then changes reminder sequence.
TEST_CARDS = {
    "4242": ("4242 4242 4242 4242", None),
    "0002": ("4000 0000 0000 0002", "card_declined"),
    "0069": ("4000 0000 0000 0069", "expired_card"),
}
DECLINE_WORDS = {
    "card_declined": "is declined when charged",
    "expired_card": "is declined when charged: expired card",
}

bp = Blueprint("demo", __name__, url_prefix="/demo")
# Never kept, indexed or referred on: the pages show every message in full.
security.protect(
    bp,
    headers={
        "Cache-Control": "no-store",
        "X-Robots-Tag": "noindex, nofollow",
        "Referrer-Policy": "no-referrer",
    },
)


def demo_enabled(settings: Settings) -> bool:
    value = settings.extra.get(DEMO_ENV) or os.environ.get(DEMO_ENV, "")
    return value.strip().lower() in ("1", "true", "yes")


def _gateway() -> Any:
    gateway = runtime().gateway
    if not hasattr(gateway, "complete_checkout_session"):
        abort(404)  # a real Stripe account: its own pages do this
    return gateway


@bp.errorhandler(security.CsrfFailed)
def csrf_failed(exc: security.CsrfFailed) -> tuple[Response, int]:
    return error_response(400, "bad_request", "the form expired; go back and try again")


@bp.app_template_filter("demo_links")
def demo_links(text: str) -> Markup:
    """Escape the text, then make its URLs clickable."""
    escaped = str(escape(text))
    return Markup(URL.sub(lambda m: f'<a href="{m.group(0)}">{m.group(0)}</a>', escaped))


@bp.context_processor
def helpers() -> dict[str, Any]:
    return {"business": runtime().rules.business.name}


@bp.get("/")
def index() -> Any:
    return redirect(url_for("demo.outbox"))


@bp.get("/outbox")
def outbox() -> str:
    channel = request.args.get("channel")
    page = outbox_log.messages(
        runtime(), before=request.args.get("before", type=int) or None, channel=channel
    )
    older = page.rows[-1].id if page.has_more else None
    return render_template("demo/outbox.html", messages=page.rows, older=older, channel=channel)


@bp.route("/checkout/<session_id>", methods=["GET", "POST"])
def checkout(session_id: str) -> Any:
    gateway = _gateway()
    try:
        session = gateway.retrieve_checkout_session(session_id)
    except GatewayError:
        abort(404)
    if session.get("mode") != "setup":
        abort(404)
    if request.method == "GET" or session.get("status") != "open":
        return render_template(
            "demo/checkout.html", session=session, cards=TEST_CARDS, words=DECLINE_WORDS
        )
    if request.form.get("action") == "cancel":
        return redirect(str(session["cancel_url"]), code=303)
    card = request.form.get("card", "")
    if card not in TEST_CARDS:
        abort(400, "choose one of the test cards")
    gateway.complete_checkout_session(
        session_id, brand="visa", last4=card, declines_with=TEST_CARDS[card][1]
    )
    success = str(session["success_url"]).replace("{CHECKOUT_SESSION_ID}", session_id)
    return redirect(success, code=303)


@bp.route("/invoice/<invoice_id>", methods=["GET", "POST"])
def invoice(invoice_id: str) -> Any:
    gateway = _gateway()
    try:
        found = gateway.retrieve_invoice(invoice_id)
    except GatewayError:
        abort(404)
    error = None
    if request.method == "POST" and found.get("status") == "open":
        card = request.form.get("card", "")
        if card not in TEST_CARDS:
            abort(400, "choose one of the test cards")
        pm = gateway.add_payment_method(
            found["customer"], brand="visa", last4=card, declines_with=TEST_CARDS[card][1]
        )
        gateway.add_event("payment_method.attached", pm)
        try:
            gateway.pay_invoice(
                invoice_id,
                idempotency_key=f"demo-hosted:{invoice_id}:{pm['id']}",
                payment_method=pm["id"],
                off_session=False,
            )
            return redirect(url_for("demo.invoice", invoice_id=invoice_id), code=303)
        except GatewayError as exc:
            error = exc.message
    return render_template("demo/invoice.html", invoice=found, cards=TEST_CARDS, error=error)


@bp.get("/cancel/<subscription_id>")
def start_cancel_flow(subscription_id: str) -> Any:
    """What a business's "cancel subscription" button does: create a session server to server
    (POST /api/v1/cancel-sessions) and redirect the subscriber to it."""
    rt = runtime()
    customer_id = mirror_reads.subscription_customer(rt, subscription_id)
    if not customer_id:
        abort(404)
    request_ = cancel_flow.StartRequest(
        customer_id=customer_id,
        subscription_id=subscription_id,
        return_url=f"{rt.settings.public_url}/demo/outbox",
        source="demo",
    )
    try:
        _, token = cancel_flow.start_session(rt, request_)
    except cancel_flow.FlowError as exc:
        abort(409, str(exc))
    return redirect(cancel_flow.session_url(rt.settings, token), code=303)


def init_app(app: Flask) -> None:
    """Register the pages if RECOVERY_DEMO is set; production refuses to start with it."""
    settings = app.extensions["recovery"].settings
    if not demo_enabled(settings):
        return
    if settings.is_production:
        raise ConfigError(
            "RECOVERY_DEMO is set: the demo pages (a fake Checkout, every message in full) "
            "must never run in production; unset it"
        )
    app.register_blueprint(bp)
