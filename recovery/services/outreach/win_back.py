"""Win-back: when a subscription ends - cancelled in the cancel flow, by the business, or lost
to dunning - a short sequence of plain-text notes (`[win_back] days` after the end) with a
"come back" link. The page (`/come-back/<token>`) restarts the same plan through Stripe Checkout
in subscription mode, with the rules' coupon if any.

Marketing mail (docs/messaging.md#transactional-and-commercial-email): planned only where the
customer's metadata records the business's consent, never to an address that unsubscribed, and
everything pending stops the moment the customer has a live subscription again. A restart
through the link is counted as reactivated, with the monthly revenue it brings (the new
subscription carries `recovery_win_back` in its metadata, from Checkout's subscription_data).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from recovery import i18n
from recovery.db import insert_or_ignore
from recovery.domain import outreach as rules_of
from recovery.domain.offers import monthly_amount
from recovery.domain.reminders import next_day_at
from recovery.domain.stripe_objects.fields import ref
from recovery.domain.stripe_objects.states import subscription_state
from recovery.models import (
    CancelSession,
    Customer,
    OutboxMessage,
    RecoveryCase,
    Subscription,
    WinBack,
)
from recovery.runtime import ProcessingContext, Runtime
from recovery.services.messaging import outbox, reminders
from recovery.services.outreach import links, mail

log = logging.getLogger(__name__)

JOB_NAME = "win_back"
KIND = "win_back"
TEMPLATE = "win_back"
METADATA_KEY = "recovery_win_back"
LIVE = ("active", "trialing", "past_due")
Obj = Mapping[str, Any]


class Refused(Exception):
    """The link does not open a win-back page (unknown, expired, revoked): 404."""


@dataclass(frozen=True)
class ComeBackView:
    """`status`: open (the button), back (a live subscription again), unavailable."""

    status: str
    currency: str = ""
    amount: int = 0  # per billing period of the price, quantity included
    interval: str = "month"
    coupon: bool = False
    locales: tuple[str, ...] = ()


def _back(session: Session, customer_id: str) -> bool:
    return bool(
        session.scalar(
            select(Subscription.id).where(
                Subscription.customer_id == customer_id, Subscription.status.in_(LIVE)
            )
        )
    )


def _ended_by(session: Session, sub: Subscription) -> str:
    if session.scalar(
        select(CancelSession.id).where(
            CancelSession.subscription_id == sub.id, CancelSession.outcome == "cancelled"
        )
    ):
        return "cancel_flow"
    lost = session.scalar(
        select(RecoveryCase.id).where(
            RecoveryCase.subscription_id == sub.id, RecoveryCase.status == "lost"
        )
    )
    if lost or sub.cancellation_reason == "payment_failed":
        return "dunning"
    return "business"


def plan(session: Session, rt: Runtime, sub: Subscription, now: datetime) -> WinBack | None:
    """Plan the sequence for an ended subscription (once). None when it gets none."""
    config = rt.rules.win_back
    ended = sub.ended_at or sub.canceled_at
    if not config.enabled or sub.status != "canceled" or ended is None or not sub.items:
        return None
    if now - ended > timedelta(days=max(config.days)) or sub.customer_id is None:
        return None
    customer = session.get(Customer, sub.customer_id)
    if customer is None or customer.deleted or _back(session, customer.id):
        return None
    if not rules_of.marketing_consent(customer.metadata_, config):
        return None
    item = sub.items[0]
    if not item.price_id:
        return None
    inserted = insert_or_ignore(
        session,
        WinBack,
        {
            "subscription_id": sub.id,
            "customer_id": customer.id,
            "price_id": item.price_id,
            "quantity": item.quantity,
            "currency": (item.currency or sub.currency or "usd").lower(),
            "monthly_amount": monthly_amount(
                (item.unit_amount or 0) * item.quantity, item.interval, item.interval_count
            ),
            "ended_at": ended,
            "ended_by": _ended_by(session, sub),
            "status": "planned",
            "created_at": now,
        },
        ["subscription_id"],
    )
    if not inserted:
        return None
    win_back = session.scalars(select(WinBack).where(WinBack.subscription_id == sub.id)).one()
    zone = reminders.zone_of(customer)
    for index, at in enumerate(rules_of.win_back_times(ended, config.days)):
        # That day at the usual sending hour, customer-local; a day already past goes now.
        local = next_day_at(at - timedelta(days=1), zone, rt.rules.reminders.send_hour)
        if local < now - timedelta(days=1):
            continue
        mail.write(
            session,
            rules=rt.rules,
            settings=rt.settings,
            customer=customer,
            kind=KIND,
            row_id=win_back.id,
            template=TEMPLATE,
            step=f"win_back.{index}",
            key=f"outreach:win_back:{win_back.id}:{index}",
            send_after=max(local, now),
            now=now,
            context={"coupon": bool(config.coupon)},
            win_back_id=win_back.id,
        )
    return win_back


def scan(session: Session, rt: Runtime, now: datetime) -> int:
    """Plan the sequence of every subscription that ended within the sequence's span and has
    none yet (an event missed, or win-back switched on later). Idempotent."""
    config = rt.rules.win_back
    if not config.enabled:
        return 0
    subs = session.scalars(
        select(Subscription)
        .where(Subscription.status == "canceled")
        .where(Subscription.ended_at >= now - timedelta(days=max(config.days)))
        .where(~Subscription.id.in_(select(WinBack.subscription_id)))
        .order_by(Subscription.id)
    ).all()
    return sum(plan(session, rt, sub, now) is not None for sub in subs)


def daily_job(rt: Runtime, session: Session) -> None:
    made = scan(session, rt, rt.clock.now())
    log.info("win-back: %d new sequences", made)


def still_wanted(session: Session, message: OutboxMessage) -> str | None:
    win_back = session.get(WinBack, int(message.about.rsplit(":", 1)[1]))
    if win_back is None or win_back.status != "planned":
        return "the win-back sequence stopped"
    if _back(session, win_back.customer_id):
        return "the customer subscribed again"
    return None


# ---- reactions ----------------------------------------------------------------------------------


def on_subscription_ended(ctx: ProcessingContext, event: Mapping[str, Any], obj: Obj) -> None:
    sub = ctx.session.get(Subscription, ref(obj.get("id")) or "")
    if sub is not None:
        plan(ctx.session, ctx.runtime, sub, ctx.clock.now())


def on_subscription_started(ctx: ProcessingContext, event: Mapping[str, Any], obj: Obj) -> None:
    """A live subscription again: every win-back of the customer stops at once; one started
    through our link counts as reactivated, with its monthly revenue."""
    if obj.get("status") not in LIVE:
        return
    customer_id = ref(obj.get("customer"))
    if not customer_id:
        return
    now = ctx.clock.now()
    metadata = obj.get("metadata")
    via = str(metadata.get(METADATA_KEY) or "") if isinstance(metadata, Mapping) else ""
    planned = ctx.session.scalars(
        select(WinBack)
        .where(WinBack.customer_id == customer_id)
        .where(WinBack.status.in_(("planned", "stopped")))
        .with_for_update()
    ).all()
    for win_back in planned:
        if via == str(win_back.id):
            win_back.status, win_back.reactivated_at = "reactivated", now
            win_back.new_subscription_id = ref(obj.get("id"))
            win_back.reactivated_amount = _monthly_revenue(obj)
        elif win_back.status == "planned":
            win_back.status, win_back.stop_reason = "stopped", "the customer subscribed again"
        outbox.cancel(ctx.session, links.about(KIND, win_back.id), now)


def _monthly_revenue(sub: Obj) -> int:
    """The new subscription's monthly revenue, from the event's items (the mirror's reading
    of the same object, so a malformed field counts as nothing rather than failing)."""
    return sum(
        monthly_amount((item.unit_amount or 0) * item.quantity, item.interval, item.interval_count)
        for item in subscription_state(sub).items
    )


# ---- the page -----------------------------------------------------------------------------------


def _open(session: Session, token: str, now: datetime) -> tuple[WinBack, tuple[str, ...]]:
    link = links.find(session, token, now, lock=True)
    win_back = session.get(WinBack, link.win_back_id) if link and link.win_back_id else None
    if link is None or win_back is None:
        raise Refused(token)
    links.record_open(link, now)
    customer = session.get(Customer, win_back.customer_id)
    return win_back, tuple(customer.preferred_locales or []) if customer else ()


def open_page(rt: Runtime, token: str) -> ComeBackView:
    now = rt.clock.now()
    with rt.db.transaction() as session:
        win_back, locales = _open(session, token, now)
        if _back(session, win_back.customer_id) or win_back.status == "reactivated":
            return ComeBackView(status="back", locales=locales)
        price_id, quantity, currency = win_back.price_id, win_back.quantity, win_back.currency
    price = rules_of.price_terms(rt.gateway.retrieve_price(price_id))
    if not price.active or price.currency != currency or price.interval not in ("month", "year"):
        return ComeBackView(status="unavailable", locales=locales)
    return ComeBackView(
        status="open",
        currency=currency,
        amount=price.amount * quantity,
        interval=str(price.interval),
        coupon=bool(rt.rules.win_back.coupon),
        locales=locales,
    )


def start_checkout(rt: Runtime, token: str, return_base: str) -> str | None:
    """The Stripe Checkout URL that restarts the plan; None when the customer is back already.
    A double click (same day) reuses the same session through the idempotency key."""
    now = rt.clock.now()
    with rt.db.transaction() as session:
        win_back, locales = _open(session, token, now)
        if _back(session, win_back.customer_id) or win_back.status == "reactivated":
            return None
        link = links.find(session, token, now)
        assert link is not None
        wb_id, customer_id = win_back.id, win_back.customer_id
        price_id, quantity = win_back.price_id, win_back.quantity
        key = f"win-back:{wb_id}:checkout:{link.id}:{now.date().isoformat()}"
    coupon = rt.rules.win_back.coupon or None
    checkout = rt.gateway.create_checkout_subscription_session(
        customer_id=customer_id,
        price_id=price_id,
        quantity=quantity,
        success_url=f"{return_base}/done?session_id={{CHECKOUT_SESSION_ID}}",
        cancel_url=return_base,
        metadata={METADATA_KEY: str(wb_id)},
        idempotency_key=key,
        coupon=coupon,
        locale=_checkout_locale(locales),
    )
    with rt.db.transaction() as session:
        row = session.get(WinBack, wb_id, with_for_update=True)
        if row is not None:
            row.checkout_session_id = str(checkout["id"])
    return str(checkout["url"])


def _checkout_locale(locales: tuple[str, ...]) -> str | None:
    # Checkout speaks these of ours under the same tags (pt-BR with a hyphen).
    chosen = i18n.negotiate(list(locales))
    return {"pt_BR": "pt-BR"}.get(chosen or "", chosen)


def finished(rt: Runtime, token: str) -> ComeBackView:
    """The page after Checkout: whether the new subscription is already known."""
    now = rt.clock.now()
    with rt.db.transaction() as session:
        win_back, locales = _open(session, token, now)
        status = "back" if _back(session, win_back.customer_id) else "pending"
        return ComeBackView(status=status, locales=locales)
