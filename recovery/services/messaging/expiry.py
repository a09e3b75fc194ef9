"""The expiry tracker: a daily scan for active subscriptions whose default card expires before
the next renewal, running the `expiring` reminder sequence; cancelled once the card changes.

Messages are about `expiry:<subscription id>:<card id>`: a new default card (or the card
updater's new expiry date) makes every pending one stale. A reaction on card events cancels
them at once, the card-update page cancels them when the customer saves a card through it, and
the sender re-checks right before sending.

Each notice carries its own login-free card-update link, bound to the customer and the
subscription (there is no case: nothing is owed yet); its token is derived from the message's
dedupe key and put in by the sender, so it is never stored (services/card_update_links.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from recovery.config import Settings
from recovery.domain import reminders as planner
from recovery.domain import sms as sms_rules
from recovery.domain.stripe_objects.fields import ref
from recovery.models import Customer, MessageStatus, OutboxMessage, PaymentMethod, Subscription
from recovery.rules import Rules
from recovery.runtime import ProcessingContext, Runtime
from recovery.services.card_update import links as card_update_links
from recovery.services.card_update.links import default_card, next_payment
from recovery.services.messaging import outbox, reminders
from recovery.services.messaging.consent import may_text

JOB_NAME = "expiry_scan"
HORIZON = timedelta(days=45)  # renewals further out are looked at on a later day
LIVE = ("active", "trialing")


def card_expires_at(pm: PaymentMethod) -> datetime | None:
    """Cards work through the last day of their expiry month: the first instant after it."""
    if not pm.exp_month or not pm.exp_year:
        return None
    year, month = (pm.exp_year + 1, 1) if pm.exp_month == 12 else (pm.exp_year, pm.exp_month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


def expiring_card(session: Session, sub: Subscription) -> PaymentMethod | None:
    """The subscription's default card when it expires before the next renewal."""
    if sub.status not in LIVE or sub.cancel_at_period_end or sub.current_period_end is None:
        return None
    pm = default_card(session, sub)
    expires = card_expires_at(pm) if pm is not None else None
    if pm is None or expires is None or expires > sub.current_period_end:
        return None
    return pm


def about(sub_id: str, pm_id: str) -> str:
    return f"expiry:{sub_id}:{pm_id}"


def plan_subscription(
    session: Session, sub: Subscription, rules: Rules, settings: Settings, now: datetime
) -> int:
    pm = expiring_card(session, sub)
    config = rules.reminders
    if pm is None or sub.current_period_end is None or not config.enabled:
        return 0
    customer = session.get(Customer, sub.customer_id) if sub.customer_id else None
    zone, locale = reminders.zone_of(customer), reminders.locale_of(customer)
    renewal = sub.current_period_end.date().isoformat()
    steps = planner.plan(
        config.sequences["expiring"],
        started_at=now,
        deadline=sub.current_period_end,
        zone=zone,
        send_hour=config.send_hour,
    )
    keys = {step.index: f"{about(sub.id, pm.id)}:{renewal}:{step.index}" for step in steps}
    if not keys:
        return 0
    # The scan runs daily and most of a plan's steps were written on an earlier day: one read
    # for the plan's keys, before the phone's consent reads and the items' prices, not a read
    # per step (keys are per step, so a step written below cannot be another's).
    planned = set(
        session.scalars(
            select(OutboxMessage.dedupe_key).where(OutboxMessage.dedupe_key.in_(keys.values()))
        )
    )
    if planned.issuperset(keys.values()):
        return 0
    amount, currency = next_payment(sub)
    written = 0
    for step in steps:
        key = keys[step.index]
        if key in planned:
            continue
        at = step.at
        recipient = None
        if customer is not None and not customer.deleted:
            if step.channel == "email":
                recipient = customer.email
            else:
                phone = sms_rules.e164(customer.phone)
                if may_text(session, customer, phone, config) is None:
                    recipient = phone
                at = sms_rules.next_allowed(at, zone, config.sms)
        if not recipient:
            continue
        assert sub.customer_id is not None  # a customer with an address was found
        link = card_update_links.link_for_message(
            session,
            message_key=key,
            customer_id=sub.customer_id,
            subscription_id=sub.id,
            now=now,
            settings=settings,
            rules=rules,
            sent_at=at,
        )
        context = reminders.message_context(
            rules=rules,
            customer=customer,
            locale=locale,
            amount=amount,
            currency=currency,
            card=pm,
            link=link,
            deadline=sub.current_period_end,
        )
        subject, body = "", ""
        if step.channel == "email":
            rendered = reminders.render_email(step.template, locale, context)
            subject, body = rendered.subject, rendered.body
        else:
            text = reminders.render_sms(step.template, locale, context, config.max_sms_segments)
            if text is None:
                continue
            body = text
        row = outbox.enqueue(
            session,
            about=about(sub.id, pm.id),
            case_id=None,
            customer_id=sub.customer_id,
            channel=step.channel,
            template=step.template,
            step=f"expiring.{step.index}",
            locale=locale,
            recipient=recipient,
            subject=card_update_links.stored_form(subject, link),
            body=card_update_links.stored_form(body, link),
            send_after=at,
            dedupe_key=key,
            now=now,
            cap_zone=zone,
            send_hour=config.send_hour,
        )
        written += row is not None
    return written


def scan(session: Session, rules: Rules, settings: Settings, now: datetime) -> int:
    """Plan the expiring-card sequence for every subscription that needs it. Idempotent."""
    # Only subscriptions whose renewal card runs out by the horizon's month can need it: the
    # database finds them (the default card in `default_card`'s order), `plan_subscription`
    # decides exactly. Loading every live subscription with its customer and card to keep a
    # few was most of the scan (the demo's daily jobs: ~300 a day for a handful).
    horizon = now + HORIZON
    renewal_card = func.coalesce(  # ('' names no card, as NULL does: `default_card` skips it)
        func.nullif(Subscription.default_payment_method_id, ""),
        func.nullif(Subscription.default_source_id, ""),
        func.nullif(Customer.default_payment_method_id, ""),
        func.nullif(Customer.default_source_id, ""),
    )
    subs = session.scalars(
        select(Subscription)
        .outerjoin(Customer, Customer.id == Subscription.customer_id)
        .join(PaymentMethod, PaymentMethod.id == renewal_card)
        .where(Subscription.status.in_(LIVE))
        .where(Subscription.current_period_end > now)
        .where(Subscription.current_period_end <= horizon)
        .where(
            PaymentMethod.exp_year * 12 + PaymentMethod.exp_month
            <= horizon.year * 12 + horizon.month
        )
        .order_by(Subscription.id)
    ).all()
    loaded = _cards_of(session, subs)  # held: the session keeps loaded rows only while referenced
    planned = sum(plan_subscription(session, sub, rules, settings, now) for sub in subs)
    del loaded
    return planned


def _cards_of(session: Session, subs: Sequence[Subscription]) -> list[Any]:
    """The subscriptions' customers and default cards, loaded together (a few statements, not
    two per subscription): `default_card` finds them in the session."""
    customer_ids = sorted({s.customer_id for s in subs if s.customer_id})
    loaded: list[Any] = []
    for chunk in range(0, len(customer_ids), 500):
        ids = customer_ids[chunk : chunk + 500]
        loaded += session.scalars(select(Customer).where(Customer.id.in_(ids))).all()
    pm_ids = sorted(
        {s.default_payment_method_id for s in subs if s.default_payment_method_id}
        | {s.default_source_id for s in subs if s.default_source_id}
        | {c.default_payment_method_id for c in loaded if c.default_payment_method_id}
        | {c.default_source_id for c in loaded if c.default_source_id}
    )
    for chunk in range(0, len(pm_ids), 500):
        ids = pm_ids[chunk : chunk + 500]
        loaded += session.scalars(select(PaymentMethod).where(PaymentMethod.id.in_(ids))).all()
    return loaded


def daily_job(runtime: Runtime, session: Session) -> None:
    scan(session, runtime.rules, runtime.settings, runtime.clock.now())


def still_wanted(session: Session, message: OutboxMessage) -> str | None:
    """An expiry notice is stale once the subscription's default card is another one, or no
    longer expires before the renewal, or the subscription is no longer live."""
    _, sub_id, pm_id = message.about.split(":", 2)
    sub = session.get(Subscription, sub_id)
    if sub is None:
        return "the subscription is gone"
    pm = expiring_card(session, sub)
    if pm is None or pm.id != pm_id:
        return "the card changed or no longer expires before the renewal"
    return None


def on_card_change(
    ctx: ProcessingContext, event: Mapping[str, Any], obj: Mapping[str, Any]
) -> None:
    customer_id = obj.get("id") if obj.get("object") == "customer" else ref(obj.get("customer"))
    if not customer_id:
        return
    now = ctx.clock.now()
    pending = ctx.session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.customer_id == customer_id)
        .where(OutboxMessage.about.like("expiry:%"))
        .where(OutboxMessage.status == MessageStatus.PENDING)
    ).all()
    for about_ in sorted({m.about for m in pending}):
        message = next(m for m in pending if m.about == about_)
        if still_wanted(ctx.session, message) is not None:
            outbox.cancel(ctx.session, about_, now)


CARD_EVENTS = (
    "payment_method.attached",
    "payment_method.updated",
    "payment_method.automatically_updated",
    "payment_method.detached",
    "customer.updated",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "setup_intent.succeeded",
)
