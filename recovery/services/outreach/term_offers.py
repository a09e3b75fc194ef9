"""Annual-term offers: a daily job finds monthly subscribers early in their subscription and
emails them one offer to pay yearly; the page (`/annual/<token>`) shows the prices, the saving
and exactly what Stripe will charge and when; one click switches.

Who qualifies (all of it, on the day of the job and again right before the email goes out):
active (not trialing, past due or paused), on a monthly price the rules pair with a yearly one,
in months `months_from`..`months_to` of its life, paid up (no open invoice, no recovery case),
not set to cancel and no cancel-flow session under way, never offered before, and the customer
never said "no thanks" to one.

The switch is idempotent whatever the clicks: the first POST fixes the request (its proration
date) on the offer row, and every POST sends exactly that request under one idempotency key,
so a double click or a second tab replays Stripe's first answer - one change, one charge.
No database transaction is held open across a Stripe call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from recovery.adapters.stripe.errors import InvalidRequest, NotFound
from recovery.db import insert_or_ignore
from recovery.domain import outreach as rules_of
from recovery.domain.cases import ACTIVE
from recovery.models import (
    CancelSession,
    Customer,
    Invoice,
    OutboxMessage,
    RecoveryCase,
    Subscription,
    SubscriptionItem,
    TermOffer,
)
from recovery.rules import Rules
from recovery.runtime import Runtime
from recovery.services.messaging import outbox
from recovery.services.outreach import links, mail

log = logging.getLogger(__name__)

JOB_NAME = "term_offers"
KIND = "term_offer"
TEMPLATE = "term_offer"
ACCEPT_WINDOW = timedelta(hours=1)  # a page's proration date is honoured this long


class Refused(Exception):
    """The link does not open an offer (unknown, expired, revoked): 404."""


@dataclass(frozen=True)
class OfferView:
    """What the offer page shows. `status`: offered, accepted, declined, failed, or
    unavailable (no longer qualifies, or the yearly price is not cheaper)."""

    status: str
    currency: str = ""
    quantity: int = 1
    monthly_amount: int = 0
    annual_amount: int = 0
    saving: int = 0
    charge_amount: int = 0
    charge_at: datetime | None = None
    proration: str = "charge_now"
    proration_date: int = 0
    locales: tuple[str, ...] = ()


# ---- the daily job ------------------------------------------------------------------------------


def _blocked(session: Session, sub: Subscription, now: datetime) -> str | None:
    """Why the subscription may not be offered anything now, whatever the rules, or None."""
    if sub.status != "active" or sub.cancel_at_period_end or sub.pause_behavior:
        return "the subscription is not active, is set to cancel or is paused"
    if session.scalar(
        select(RecoveryCase.id).where(
            RecoveryCase.subscription_id == sub.id, RecoveryCase.status.in_(ACTIVE)
        )
    ):
        return "a payment is being recovered"
    if session.scalar(
        select(Invoice.id).where(Invoice.subscription_id == sub.id, Invoice.status == "open")
    ):
        return "an invoice is unpaid"
    if session.scalar(
        select(CancelSession.id).where(
            CancelSession.subscription_id == sub.id,
            CancelSession.decided_at.is_(None),
            CancelSession.expires_at > now,
        )
    ):
        return "a cancel flow is under way"
    return None


def _qualifies(
    session: Session, sub: Subscription, rules: Rules, now: datetime, *, window: bool = True
) -> str | None:
    """None when the subscription may get an offer now, else why not. `window=False`: an
    offer already made stays good after the months it is made in (its link lives 60 days)."""
    config = rules.term_offers
    if len(sub.items) != 1:
        return "the subscription has several items"
    item = sub.items[0]
    if config.annual_for(item.price_id) is None or (item.interval, item.interval_count) != (
        "month",
        1,
    ):
        return "not on a monthly price the rules pair with a yearly one"
    if window and (
        sub.created is None
        or not rules_of.in_offer_window(datetime.fromtimestamp(sub.created, UTC), now, config)
    ):
        return "outside the months the rules offer in"
    return _blocked(session, sub, now)


def offer_subscription(
    session: Session, rt: Runtime, sub: Subscription, now: datetime
) -> TermOffer | None:
    """Make the subscription its one offer and queue the email. None when it has one, may not
    get one, or nobody may be written to."""
    rules = rt.rules
    if _qualifies(session, sub, rules, now) is not None or sub.customer_id is None:
        return None
    customer = session.get(Customer, sub.customer_id)
    if customer is None or customer.deleted:
        return None
    declined = session.scalar(
        select(TermOffer.id).where(
            TermOffer.customer_id == customer.id, TermOffer.status == "declined"
        )
    )
    if declined is not None:
        return None
    item = sub.items[0]
    annual = rules.term_offers.annual_for(item.price_id)
    assert annual is not None and item.price_id is not None
    inserted = insert_or_ignore(
        session,
        TermOffer,
        {
            "subscription_id": sub.id,
            "customer_id": customer.id,
            "item_id": item.id,
            "monthly_price": item.price_id,
            "annual_price": annual,
            "quantity": item.quantity,
            "currency": (item.currency or sub.currency or "usd").lower(),
            "monthly_amount": item.unit_amount or 0,
            "proration": rules.term_offers.proration,
            "status": "offered",
            "offered_at": now,
        },
        ["subscription_id"],
    )
    if not inserted:
        return None
    offer = session.scalars(select(TermOffer).where(TermOffer.subscription_id == sub.id)).one()
    written = mail.write(
        session,
        rules=rules,
        settings=rt.settings,
        customer=customer,
        kind=KIND,
        row_id=offer.id,
        template=TEMPLATE,
        step="term_offer",
        key=f"outreach:term_offer:{offer.id}",
        send_after=now,
        now=now,
        context={},
        term_offer_id=offer.id,
    )
    if not written:  # nobody to write to (no address, or every address unsubscribed)
        session.delete(offer)
        session.flush()
        return None
    return offer


def scan(session: Session, rt: Runtime, now: datetime) -> int:
    """Offer every subscription that qualifies today. Idempotent: one offer per subscription."""
    config = rt.rules.term_offers
    if not config.enabled or not config.prices:
        return 0
    oldest = int((now - timedelta(days=31 * config.months_to + 1)).timestamp())
    subs = session.scalars(
        select(Subscription)
        .join(SubscriptionItem, SubscriptionItem.subscription_id == Subscription.id)
        .where(Subscription.status == "active")
        .where(SubscriptionItem.price_id.in_([p.monthly for p in config.prices]))
        .where(Subscription.created >= oldest)
        .where(~Subscription.id.in_(select(TermOffer.subscription_id)))
        .order_by(Subscription.id)
    ).all()
    return sum(offer_subscription(session, rt, sub, now) is not None for sub in subs)


def daily_job(rt: Runtime, session: Session) -> None:
    made = scan(session, rt, rt.clock.now())
    log.info("term offers: %d new", made)


def still_wanted(session: Session, message: OutboxMessage) -> str | None:
    """Right before sending: the offer is still open and the subscription still may get it."""
    offer = session.get(TermOffer, int(message.about.rsplit(":", 1)[1]))
    if offer is None or offer.status != "offered":
        return "the offer was decided or withdrawn"
    sub = session.get(Subscription, offer.subscription_id)
    if sub is None:
        return "the subscription is gone"
    return _blocked(session, sub, message.send_after)


# ---- the page -----------------------------------------------------------------------------------


def _open(session: Session, token: str, now: datetime) -> tuple[TermOffer, Subscription | None]:
    link = links.find(session, token, now, lock=True)
    offer = session.get(TermOffer, link.term_offer_id) if link and link.term_offer_id else None
    if link is None or offer is None:
        raise Refused(token)
    links.record_open(link, now)
    offer.opened_at = offer.opened_at or now
    return offer, session.get(Subscription, offer.subscription_id)


def _locales(session: Session, offer: TermOffer) -> tuple[str, ...]:
    customer = session.get(Customer, offer.customer_id)
    return tuple(customer.preferred_locales or []) if customer else ()


def _decided(offer: TermOffer, locales: tuple[str, ...]) -> OfferView:
    """The page of an offer already decided (or being carried out: shown as accepted)."""
    return OfferView(
        status="accepted" if offer.status == "accepting" else offer.status,
        currency=offer.currency,
        quantity=offer.quantity,
        annual_amount=offer.annual_amount or 0,
        charge_amount=offer.charged_amount or 0,
        charge_at=offer.charge_at,
        proration=offer.proration,
        locales=locales,
    )


def open_page(rt: Runtime, token: str) -> OfferView:
    """The offer as Stripe would carry it out now (prices and preview read from Stripe)."""
    now = rt.clock.now()
    with rt.db.transaction() as session:
        offer, sub = _open(session, token, now)
        locales = _locales(session, offer)
        if offer.status != "offered":
            return _decided(offer, locales)
        if sub is None or _qualifies(session, sub, rt.rules, now, window=False) is not None:
            return OfferView(status="unavailable", locales=locales)
        period_end = sub.current_period_end
        subscription_id, customer_id = offer.subscription_id, offer.customer_id
        item_id, annual_price, quantity = offer.item_id, offer.annual_price, offer.quantity
        currency, monthly, proration = offer.currency, offer.monthly_amount, offer.proration
    gateway = rt.gateway
    price = rules_of.price_terms(gateway.retrieve_price(annual_price))
    annual = price.amount
    saving = rules_of.yearly_saving(monthly, annual, quantity)
    if (
        price.currency != currency
        or (price.interval, price.interval_count) != ("year", 1)
        or saving <= 0
    ):
        return OfferView(status="unavailable", locales=locales)
    stamp = int(now.timestamp())
    if proration == "charge_now":
        preview = gateway.preview_price_change(
            subscription_id,
            customer_id=customer_id,
            item_id=item_id,
            price_id=annual_price,
            quantity=quantity,
            proration_behavior="always_invoice",
            proration_date=stamp,
        )
        charge_at = now
    else:
        charge_at = period_end or now
        preview = gateway.preview_price_from(
            customer_id,
            price_id=annual_price,
            quantity=quantity,
            starts_at=int(charge_at.timestamp()),
        )
    return OfferView(
        status="offered",
        currency=currency,
        quantity=quantity,
        monthly_amount=monthly,
        annual_amount=annual,
        saving=saving,
        charge_amount=int(preview.get("amount_due") or 0),
        charge_at=charge_at,
        proration=proration,
        proration_date=stamp,
        locales=locales,
    )


def accept(rt: Runtime, token: str, proration_date: int | None) -> OfferView:
    """Switch the subscription (once, whatever the number of clicks and tabs)."""
    now = rt.clock.now()
    with rt.db.transaction() as session:
        offer, sub = _open(session, token, now)
        locales = _locales(session, offer)
        if offer.status == "offered":
            if sub is None or _qualifies(session, sub, rt.rules, now, window=False) is not None:
                return OfferView(status="unavailable", locales=locales)
            stamp = int(now.timestamp())
            if (
                proration_date is not None
                and stamp - ACCEPT_WINDOW.total_seconds() <= (proration_date) <= stamp
            ):
                stamp = proration_date  # the date the page's preview was made for
            offer.status, offer.decided_at = "accepting", now
            if offer.proration == "charge_now":
                offer.charge_at = datetime.fromtimestamp(stamp, UTC)
            else:
                offer.charge_at = sub.current_period_end or now
        if offer.status != "accepting":
            return _decided(offer, locales)
        request = (
            offer.id,
            offer.subscription_id,
            offer.item_id,
            offer.annual_price,
            offer.quantity,
            offer.proration,
            offer.charge_at,
        )
    offer_id, sub_id, item_id, annual_price, quantity, proration, charge_at = request
    assert charge_at is not None
    key = f"term-offer:{offer_id}:switch"
    gateway = rt.gateway
    schedule_id, charged = None, None
    try:
        annual = rules_of.price_terms(gateway.retrieve_price(annual_price)).amount
        if proration == "charge_now":
            result = gateway.switch_subscription_price(
                sub_id,
                item_id=item_id,
                price_id=annual_price,
                quantity=quantity,
                proration_behavior="always_invoice",
                proration_date=int(charge_at.timestamp()),
                idempotency_key=key,
            )
            invoice_id = result.get("latest_invoice")
            invoice = gateway.retrieve_invoice(str(invoice_id)) if invoice_id else {}
            charged = int(invoice.get("amount_paid") or invoice.get("amount_due") or 0)
        else:
            schedule = gateway.schedule_price_at_renewal(
                sub_id, price_id=annual_price, quantity=quantity, idempotency_key=key
            )
            schedule_id, charged = str(schedule["id"]), annual * quantity
    except (InvalidRequest, NotFound) as exc:  # Stripe refused for good: nothing changed
        with rt.db.transaction() as session:
            failed = session.get(TermOffer, offer_id, with_for_update=True)
            assert failed is not None
            if failed.status == "accepting":
                failed.status, failed.error = "failed", str(exc)[:2000]
            return _decided(failed, locales)
    with rt.db.transaction() as session:
        done = session.get(TermOffer, offer_id, with_for_update=True)
        assert done is not None
        offer = done
        if offer.status == "accepting":
            offer.status, offer.applied_at = "accepted", now
            offer.annual_amount, offer.charged_amount = annual, charged
            offer.schedule_id = schedule_id
            outbox.cancel(session, links.about(KIND, offer.id), now)
        return _decided(offer, locales)


def decline(rt: Runtime, token: str) -> OfferView:
    """ "No thanks": this offer is closed and the customer gets no other."""
    now = rt.clock.now()
    with rt.db.transaction() as session:
        offer, _sub = _open(session, token, now)
        if offer.status == "offered":
            offer.status, offer.decided_at = "declined", now
            outbox.cancel(session, links.about(KIND, offer.id), now)
        return _decided(offer, _locales(session, offer))
