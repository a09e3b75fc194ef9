"""Shadow mode (RECOVERY_MODE=shadow) on the subscriber pages: a step that would change Stripe
(saving a new card through Checkout, taking a cancel-flow offer or cancelling, switching to the
annual price, restarting a subscription) is not taken, and the page says so plainly: the
service is not active yet, nothing was changed, ask the business. 503: the page could not do
what was asked, for now; never a claim of a change that did not happen.

Only those steps are stopped: the pages themselves, the survey and "keep my subscription"
change nothing at Stripe and work as in live mode. The check runs before the blueprints' own
(CSRF included), so nothing of the request is written.
"""

from __future__ import annotations

from flask import Flask, Response, render_template, request

from recovery.web import runtime

# The POST endpoints whose step would change the Stripe account.
ACTING_STEPS = frozenset(
    {
        "card_update.start_checkout",  # creates a Checkout session, then saves a card
        "cancel_flow.accept_submit",  # a pause, a discount or a cheaper plan
        "cancel_flow.cancel",  # cancels the subscription
        "annual.accept_offer",  # switches to the annual price
        "come_back.restart",  # creates a Checkout session for a new subscription
    }
)
STATUS = 503


def not_active() -> Response:
    html = render_template("shadow/not_active.html", business=runtime().rules.business.name)
    return Response(html, status=STATUS, mimetype="text/html")


def stop_acting_steps() -> Response | None:
    if request.method != "POST" or request.endpoint not in ACTING_STEPS:
        return None
    if not runtime().settings.is_shadow:
        return None
    return not_active()


def init_app(app: Flask) -> None:
    app.before_request(stop_acting_steps)
