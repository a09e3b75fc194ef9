"""One customer, everything about them: the mirrored customer and subscriptions, every recovery
case, cancel-flow session and accepted offer, every message we wrote them, and their cards -
read in one transaction, a fixed number of queries (each by an indexed customer id, each
capped), for the dashboard's customer page.

Links to Stripe's dashboard go to test or live data as the connected key is (`sk_test_…` or
`rk_test_…` is test mode, Stripe docs "API keys"); without a key the service runs on its
built-in stand-in, whose objects Stripe's dashboard does not have, so there are no links.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from recovery.config import Settings
from recovery.models import (
    CancelSession,
    Customer,
    OfferAcceptance,
    OutboxMessage,
    PaymentMethod,
    RecoveryCase,
    Subscription,
)
from recovery.runtime import Runtime
from recovery.services.reporting import account_outreach, saves
from recovery.services.reporting.account_outreach import AccountOutreach

LIMIT = 200  # rows per section; a customer with more is an outlier, and the page says so
STRIPE_DASHBOARD = "https://dashboard.stripe.com/"


def stripe_dashboard(settings: Settings) -> str | None:
    """The base of links into Stripe's dashboard for the connected account, or None."""
    key = settings.stripe_api_key
    if not key:
        return None
    test = key.startswith(("sk_test_", "rk_test_"))
    return STRIPE_DASHBOARD + ("test/" if test else "")


@dataclass(frozen=True)
class CaseLine:
    id: int
    invoice_id: str
    status: str
    currency: str
    amount_due: int
    amount_recovered: int
    opened_at: datetime
    closed_at: datetime | None
    decline_category: str | None


@dataclass(frozen=True)
class SessionLine:
    id: str
    created_at: datetime
    subscription_id: str
    reason: str | None
    offer_shown: str | None
    outcome: str | None
    save_reversed_at: datetime | None
    currency: str
    mrr_before: int


@dataclass(frozen=True)
class OfferLine:
    kind: str
    months: int | None
    subscription_id: str
    accepted_at: datetime
    ends_at: datetime | None
    applied_at: datetime | None
    reversed_at: datetime | None


@dataclass(frozen=True)
class MessageLine:
    id: int
    channel: str
    template: str
    subject: str
    recipient: str
    status: str
    send_after: datetime
    sent_at: datetime | None
    case_id: int | None
    about: str


@dataclass(frozen=True)
class CardLine:
    id: str
    brand: str | None
    last4: str | None
    exp_month: int | None
    exp_year: int | None
    funding: str | None
    wallet: str | None
    is_default: bool


@dataclass(frozen=True)
class SubscriptionLine:
    id: str
    status: str
    currency: str | None
    cancel_at_period_end: bool
    current_period_end: datetime | None
    canceled_at: datetime | None
    pause_resumes_at: datetime | None


@dataclass(frozen=True)
class CustomerPage:
    id: str
    name: str | None
    email: str | None
    phone: str | None
    country: str | None
    locales: list[str]
    deleted: bool
    in_mirror: bool
    subscriptions: list[SubscriptionLine]
    cases: list[CaseLine]
    sessions: list[SessionLine]
    offers: list[OfferLine]
    messages: list[MessageLine]
    cards: list[CardLine]
    stripe: str | None  # the dashboard's base URL, or None: no links
    limit: int = LIMIT
    outreach: AccountOutreach | None = None  # contacts, offers, win-backs, pauses, opt-outs


def _sessions(session: Session, customer_id: str) -> list[SessionLine]:
    rows = session.execute(
        select(
            CancelSession,
            saves.cancelled_in_flow_after(),
            saves.cancelled_in_stripe_after(),
        )
        .where(CancelSession.customer_id == customer_id)
        .order_by(CancelSession.created_at.desc(), CancelSession.id.desc())
        .limit(LIMIT)
    ).all()
    return [
        SessionLine(
            id=s.id,
            created_at=s.created_at,
            subscription_id=s.subscription_id,
            reason=s.reason,
            offer_shown=s.offer_shown,
            outcome=s.outcome,
            save_reversed_at=saves.reversed_at(s.outcome, in_flow, in_stripe),
            currency=s.currency,
            mrr_before=s.mrr_before,
        )
        for s, in_flow, in_stripe in rows
    ]


def _offers(session: Session, customer_id: str, lines: list[SessionLine]) -> list[OfferLine]:
    by_session = {s.id: s for s in lines}
    rows = session.scalars(
        select(OfferAcceptance)
        .where(OfferAcceptance.customer_id == customer_id)
        .order_by(OfferAcceptance.accepted_at.desc())
        .limit(LIMIT)
    ).all()
    out = []
    for a in rows:
        owner = by_session.get(a.session_id)
        reversed_at = owner.save_reversed_at if owner else None
        if owner is not None and owner.outcome == "cancelled":
            reversed_at = reversed_at or a.accepted_at  # cancelled in the same session
        out.append(
            OfferLine(
                kind=a.kind,
                months=a.months,
                subscription_id=a.subscription_id,
                accepted_at=a.accepted_at,
                ends_at=a.ends_at,
                applied_at=a.applied_at,
                reversed_at=reversed_at,
            )
        )
    return out


def _cards(session: Session, customer: Customer | None, customer_id: str) -> list[CardLine]:
    rows = session.scalars(
        select(PaymentMethod)
        .where(PaymentMethod.customer_id == customer_id)
        .order_by(PaymentMethod.created.desc(), PaymentMethod.id)
        .limit(LIMIT)
    ).all()
    defaults = set()
    if customer is not None:
        defaults = {customer.default_payment_method_id, customer.default_source_id}
    return [
        CardLine(
            id=pm.id,
            brand=pm.brand,
            last4=pm.last4,
            exp_month=pm.exp_month,
            exp_year=pm.exp_year,
            funding=pm.funding,
            wallet=pm.wallet,
            is_default=pm.id in defaults,
        )
        for pm in rows
    ]


def read(session: Session, settings: Settings, customer_id: str) -> CustomerPage | None:
    customer = session.get(Customer, customer_id)
    cases = session.scalars(
        select(RecoveryCase)
        .where(RecoveryCase.customer_id == customer_id)
        .order_by(RecoveryCase.opened_at.desc(), RecoveryCase.id.desc())
        .limit(LIMIT)
    ).all()
    sessions = _sessions(session, customer_id)
    if customer is None and not cases and not sessions:
        return None
    subscriptions = session.scalars(
        select(Subscription)
        .where(Subscription.customer_id == customer_id)
        .order_by(Subscription.created.desc(), Subscription.id)
        .limit(LIMIT)
    ).all()
    messages = session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.customer_id == customer_id)
        .order_by(OutboxMessage.send_after.desc(), OutboxMessage.id.desc())
        .limit(LIMIT)
    ).all()
    return CustomerPage(
        id=customer_id,
        name=customer.name if customer else None,
        email=customer.email if customer else None,
        phone=customer.phone if customer else None,
        country=customer.address_country if customer else None,
        locales=list(customer.preferred_locales or []) if customer else [],
        deleted=bool(customer and customer.deleted),
        in_mirror=customer is not None,
        subscriptions=[
            SubscriptionLine(
                id=s.id,
                status=s.status,
                currency=s.currency,
                cancel_at_period_end=s.cancel_at_period_end,
                current_period_end=s.current_period_end,
                canceled_at=s.canceled_at,
                pause_resumes_at=s.pause_resumes_at,
            )
            for s in subscriptions
        ],
        cases=[
            CaseLine(
                id=c.id,
                invoice_id=c.invoice_id,
                status=c.status,
                currency=c.currency,
                amount_due=c.amount_due,
                amount_recovered=c.amount_recovered,
                opened_at=c.opened_at,
                closed_at=c.closed_at,
                decline_category=c.decline_category,
            )
            for c in cases
        ],
        sessions=sessions,
        offers=_offers(session, customer_id, sessions),
        messages=[
            MessageLine(
                id=m.id,
                channel=m.channel,
                template=m.template,
                subject=m.subject,
                recipient=m.recipient,
                status=m.status,
                send_after=m.send_after,
                sent_at=m.sent_at,
                case_id=m.case_id,
                about=m.about,
            )
            for m in messages
        ],
        cards=_cards(session, customer, customer_id),
        stripe=stripe_dashboard(settings),
        outreach=account_outreach.read(session, customer_id),
    )


def customer_page(rt: Runtime, customer_id: str) -> CustomerPage | None:
    """Everything about one customer; None when nothing here names them."""
    if not customer_id or len(customer_id) > 255:
        return None
    with rt.db.reading() as session:
        return read(session, rt.settings, customer_id)
