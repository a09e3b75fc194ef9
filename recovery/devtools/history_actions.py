"""What the demo's customers do, through the same doors as real ones.

- Update their card from a link in an email: the real `/update/<token>` pages (a Flask test
  client on the history's app: CSRF, link checks, Checkout, the return page), the stand-in
  Checkout completed in the fake; sometimes the tab is closed before the return page, so the
  webhook path (checkout.session.completed -> the worker) finishes it instead.
- Pay on Stripe's hosted invoice page: a charge in the fake, on the session's card.
- Walk the cancel flow: the cancel-flow services (survey, the one offer, accept or cancel).
"""

from __future__ import annotations

import random
import re
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import select

from recovery import i18n
from recovery.adapters.stripe.errors import AuthenticationRequired, CardDeclined, InvalidRequest
from recovery.devtools.population import CardSpec
from recovery.domain.offer_terms import OfferTerms
from recovery.models import MessageStatus, OutboxMessage
from recovery.runtime import Runtime
from recovery.services.cancel import decisions as cancel_decisions
from recovery.services.cancel import flow as cancel_flow
from recovery.services.card_update.links import PLACEHOLDER, message_token

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
RETURN_URL = "https://acme.example/account"

# Why people leave (the shipped reason ids), how often, and what some of them write.
REASONS: tuple[tuple[str, int], ...] = (
    ("too_expensive", 30),
    ("not_using", 22),
    ("missing_feature", 12),
    ("switching", 11),
    ("technical", 8),
    ("temporary", 10),
    ("other", 7),
)
ANSWERS: dict[str, tuple[str, ...]] = {
    "too_expensive": (
        "Budget cuts this quarter.",
        "We only use a fraction of the features for the price.",
        "Too much for a two-person team.",
    ),
    "not_using": (
        "Haven't logged in for weeks.",
        "The project that needed it is finished.",
    ),
    "missing_feature": (
        "No SSO on our plan.",
        "We need an export to our accounting tool.",
        "Please add a dark mode and keyboard shortcuts.",
    ),
    "switching": ("Moving to a tool our parent company already pays for.",),
    "technical": ("Sync kept failing on large files.", "Too slow on mobile."),
    "temporary": ("Seasonal business, back in spring.", "Parental leave for a few months."),
    "other": ("Closing the company.", "Just tidying up subscriptions."),
}
# Chance a subscriber takes the offer shown, by offer (the rest cancel, or keep as they are):
# with about half the reasons offering nothing, a save rate of about a fifth, as published
# cancel-flow benchmarks put it.
ACCEPT = {"pause": 0.4, "downgrade": 0.32, "longer_term": 0.25, "discount": 0.35}
# Scripted sessions (`script`): the reason that shows an offer, and the decision.
SCRIPTED_REASON = {"accept": "temporary", "cancel": "missing_feature"}


def latest_link(rt: Runtime, *, case_id: int | None = None, about_like: str = "") -> str | None:
    """The token of the newest sent message (about a case, or matching `about_like`) that
    carries a card-update link: what the customer clicks in their inbox."""
    with rt.db.transaction() as session:
        query = select(OutboxMessage).where(OutboxMessage.status == MessageStatus.SENT)
        if case_id is not None:
            query = query.where(OutboxMessage.case_id == case_id)
        else:
            query = query.where(OutboxMessage.about.like(about_like))
        for row in session.scalars(query.order_by(OutboxMessage.sent_at.desc())):
            if PLACEHOLDER in row.body:
                return message_token(rt.settings.secret_key, row.dedupe_key)
    return None


def _csrf(html: str) -> str:
    found = CSRF_FIELD.search(html)
    return found.group(1) if found else ""


def update_card(
    client: FlaskClient,
    fake: Any,
    token: str,
    card: CardSpec,
    *,
    first_card_declines: bool,
    closes_tab: bool,
) -> str:
    """Follow a card-update link and save `card` in Checkout. Returns what happened:
    "refused" (the link no longer opens), "saved" (the return page ran), "tab_closed"."""
    page = client.get(f"/update/{token}")
    if page.status_code != 200:
        return "refused"
    tries = [True, False] if first_card_declines else [False]
    outcome = "saved"
    for declines in tries:
        started = client.post(f"/update/{token}", data={"csrf_token": _csrf(page.text)})
        if started.status_code != 303:
            return "refused"
        session_id = str(started.headers["Location"]).rsplit("/", 1)[-1]
        fake.complete_checkout_session(
            session_id,
            brand=card.brand,
            last4="0341" if declines else card.last4,
            exp_month=card.exp_month,
            exp_year=card.exp_year,
            funding=card.funding,
            declines_with="card_declined" if declines else None,
        )
        if closes_tab and not declines:
            return "tab_closed"  # checkout.session.completed reaches the worker instead
        page = client.get(f"/update/{token}/done?session_id={session_id}")
    return outcome


def pay_hosted_invoice(fake: Any, invoice_id: str, customer_id: str, card: CardSpec) -> bool:
    """The customer opens the hosted invoice page and pays with a card typed there (passing
    3-D Secure on the page). True when paid."""
    pm = fake.add_payment_method(
        customer_id,
        brand=card.brand,
        last4=card.last4,
        exp_month=card.exp_month,
        exp_year=card.exp_year,
        funding=card.funding,
    )
    fake.add_event("payment_method.attached", pm)
    try:
        fake.pay_invoice(
            invoice_id,
            idempotency_key=f"hosted-page:{invoice_id}:{pm['id']}",
            payment_method=pm["id"],
            off_session=False,
        )
    except (CardDeclined, AuthenticationRequired, InvalidRequest):
        return False
    return True


def walk_cancel_flow(
    rt: Runtime,
    rng: random.Random,
    customer_id: str,
    subscription_id: str,
    locales: list[str],
    script: str | None = None,
) -> str:
    """One cancel-flow session from start to decision. Returns its outcome (or "open" for one
    left undecided, which the worker marks abandoned when it expires). `script` "accept" takes
    the offer shown (if any), "cancel" cancels; None lets the dice decide."""
    request = cancel_flow.StartRequest(
        customer_id=customer_id,
        subscription_id=subscription_id,
        return_url=RETURN_URL,
        locale=locales[0] if locales else None,
        source="api",
    )
    _, token = cancel_flow.start_session(rt, request)
    if script is None and rng.random() < 0.12:
        return "open"  # opened the page, then closed it
    reason = (
        SCRIPTED_REASON.get(script or "")
        or rng.choices([r for r, _ in REASONS], weights=[w for _, w in REASONS])[0]
    )
    text = rng.choice(ANSWERS[reason]) if rng.random() < 0.45 else None
    row = cancel_flow.submit_survey(rt, token, reason, text)
    display = i18n.negotiate(locales) or i18n.DEFAULT_LOCALE
    accepts = script == "accept" or (
        script is None and rng.random() < ACCEPT.get(row.offer_shown or "", 0.3)
    )
    if row.offer_shown and script != "cancel" and accepts:
        months = None
        terms = OfferTerms.from_json(row.offer_terms or {})
        if terms.pause_months:
            months = str(rng.choice(terms.pause_months))
        try:
            decided = cancel_decisions.accept_offer(rt, token, display, row.offer_shown, months)
            return decided.outcome
        except cancel_flow.FlowError:
            pass  # no longer available: they cancel instead
    if script is None and rng.random() < 0.12:
        return cancel_decisions.keep(rt, token, display).outcome
    return cancel_decisions.cancel(rt, token, display).outcome
