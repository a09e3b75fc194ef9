"""The card-update page's steps, for `/update/<token>`: open the page, start a Stripe Checkout
Session in setup mode, and finish when the customer comes back.

Database work happens in short transactions and none is held open across a Stripe call. A link
that may not open the page raises `Refused` (the page says no more than its status code).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from recovery.adapters.stripe.errors import NotFound
from recovery.models import CardUpdateLink, Customer, RecoveryCase
from recovery.runtime import Runtime
from recovery.services.card_update import bank_call, completion, links


class Refused(Exception):
    """The page's refusal: `kind` names the notice shown, `status` is its HTTP status;
    `preferred_locales` the customer's languages when the link is known (used or expired)."""

    def __init__(self, kind: str, status: int, preferred_locales: tuple[str, ...] = ()) -> None:
        super().__init__(kind)
        self.kind, self.status = kind, status
        self.preferred_locales = preferred_locales


@dataclass(frozen=True)
class Page:
    """What the page shows, and the customer's languages (Stripe `preferred_locales`)."""

    summary: links.Summary
    preferred_locales: tuple[str, ...]
    bank: bank_call.Section | None = None  # "I've contacted my bank - try again"


@dataclass(frozen=True)
class Returning:
    """A customer back from Checkout, before the session is checked with Stripe."""

    link_id: int
    customer_id: str
    preferred_locales: tuple[str, ...]


@dataclass(frozen=True)
class Finished:
    """The outcome page: `outcome` is the link's last (paid, declined, ...)."""

    outcome: str | None
    summary: links.Summary
    hosted_invoice_url: str | None
    paid_amount: int


def _open_link(
    session: Session, token: str, now: datetime, *, returning: bool = False
) -> CardUpdateLink:
    """The link behind `token`, or Refused (404/410)."""
    link = links.resolve(session, token, now, returning=returning)
    if isinstance(link, links.Refusal):
        known = links.find(session, token) if link is not links.Refusal.UNKNOWN else None
        # A used or expired link still knows whose it is: the notice speaks their language.
        raise Refused(link.value, link.status, _locales(session, known) if known else ())
    return link


def _locales(session: Session, link: CardUpdateLink) -> tuple[str, ...]:
    customer = session.get(Customer, link.customer_id)
    return tuple(customer.preferred_locales or []) if customer else ()


def open_page(rt: Runtime, token: str) -> Page:
    """The page for a visit: the opening is counted (the first goes on the case's timeline)."""
    now = rt.clock.now()
    with rt.db.transaction() as session:
        link = _open_link(session, token, now)
        links.record_open(session, link, now)
        bank = bank_call.section(session, link, rt.rules)
        return Page(links.summary(session, link), _locales(session, link), bank)


def bank_called(rt: Runtime, token: str) -> Page:
    """The customer pressed "I've contacted my bank - try again" (once per case row lock)."""
    now = rt.clock.now()
    with rt.db.transaction() as session:
        link = _open_link(session, token, now)
        pressed = bank_call.press(session, link, rt.rules, now)
        return Page(links.summary(session, link), _locales(session, link), pressed)


def page_again(rt: Runtime, token: str) -> Page:
    """The page once more, without counting a visit: Checkout was left unfinished."""
    with rt.db.reading() as session:
        link = _open_link(session, token, rt.clock.now())
        bank = bank_call.section(session, link, rt.rules)
        return Page(links.summary(session, link), _locales(session, link), bank)


def start(rt: Runtime, token: str) -> str:
    """A Checkout Session in setup mode for the link's customer: the URL to send them to.

    The same attempt (a double click, a retry after a timeout) replays the same session; a new
    round after a declined card gets a new one."""
    with rt.db.reading() as session:
        link = _open_link(session, token, rt.clock.now())
        case = session.get(RecoveryCase, link.case_id) if link.case_id is not None else None
        link_id, customer_id, round_ = link.id, link.customer_id, link.checkout_round
        metadata = {
            completion.METADATA_LINK: str(link.id),
            "recovery_case": str(case.id) if case else "",
            "subscription_id": (case.subscription_id if case else link.subscription_id) or "",
        }
    base = f"{rt.settings.public_url.rstrip('/')}/update/{token}"
    checkout: Mapping[str, Any] = {}
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
    return str(checkout["url"])


def returning(rt: Runtime, token: str) -> Returning:
    """The link a customer comes back from Checkout with; a case closed meanwhile still gets
    its answer rather than a refusal."""
    with rt.db.reading() as session:
        link = _open_link(session, token, rt.clock.now(), returning=True)
        return Returning(link.id, link.customer_id, _locales(session, link))


def _finished(session: Session, link: CardUpdateLink) -> Finished:
    case = session.get(RecoveryCase, link.case_id) if link.case_id is not None else None
    return Finished(
        outcome=link.last_outcome,
        summary=links.summary(session, link),
        hosted_invoice_url=case.hosted_invoice_url if case else None,
        paid_amount=case.amount_recovered if case else 0,
    )


def finish(rt: Runtime, back: Returning, session_id: str) -> Finished | None:
    """Verify the Checkout Session with the Stripe API (never the redirect), put the card to
    work and record the outcome. None when the session is not finished, or not this link's:
    the customer goes back to the page. A refresh charges nothing again."""
    try:
        checkout = rt.gateway.retrieve_checkout_session(session_id)
    except NotFound as exc:
        raise Refused("unknown", 404) from exc
    card = completion.card_from_checkout(checkout, back.link_id, back.customer_id)
    if card is None:
        return None
    with rt.db.reading() as session:
        row = session.get(CardUpdateLink, back.link_id)
        assert row is not None
        case = session.get(RecoveryCase, row.case_id) if row.case_id is not None else None
        if completion.already_done(row, card.setup_intent_id):
            return _finished(session, row)
        target = completion.Target.of(row, case)
    result = completion.put_card_to_work(rt.gateway, target, card)
    with rt.db.transaction() as session:
        row = session.get(CardUpdateLink, back.link_id, with_for_update=True)
        assert row is not None
        case = None
        if target.case_id is not None:
            case = session.get(RecoveryCase, target.case_id, with_for_update=True)
        completion.record_outcome(session, row, case, result, rt.clock.now(), on_page=True)
        return _finished(session, row)
