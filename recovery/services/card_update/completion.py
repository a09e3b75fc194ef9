"""Putting a card saved through a card-update link to work: make it the default on the customer
and the subscription, then pay the open invoice at once.

Two paths reach this, and both run the same code with the same idempotency keys, so a card is
charged at most once however they interleave:

- the customer lands on `/update/<token>/done` (the web view verifies the Checkout Session with
  the Stripe API - never the redirect - and calls `put_card_to_work`, then `record_outcome`);
- the customer closed the tab: `checkout.session.completed` / `setup_intent.succeeded` schedule
  the due action `card_update.complete` (the webhook transaction stays database-only) and the
  worker does the same.

Whichever comes second finds the SetupIntent already recorded on the link and does nothing.
A link of an expiring-card notice has no case and nothing to pay: the card becomes the default
and the subscription's remaining expiry notices are cancelled.
Stripe's order for which card pays: the subscription's default wins over the customer's
(https://docs.stripe.com/payments/checkout/subscriptions/update-payment-details), so both are
set; then `Invoice.pay` rather than waiting for the next retry (docs/stripe.md#paying-an-invoice).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from recovery.adapters.deadline import Deadline
from recovery.adapters.stripe.errors import AuthenticationRequired, CardDeclined, InvalidRequest
from recovery.domain.cases import TERMINAL, CaseStatus, RecoveredVia
from recovery.domain.stripe_objects.fields import ref
from recovery.domain.stripe_objects.states import card_state, invoice_state
from recovery.models import CardUpdateLink, CaseEvent, MessageStatus, OutboxMessage, RecoveryCase
from recovery.runtime import ActionContext, Claimed, ProcessingContext, Providers, ThreePhase
from recovery.services.cases import log as case_log
from recovery.services.cases import state as case_state
from recovery.services.events import mirror
from recovery.services.messaging import outbox
from recovery.services.work import due_actions
from recovery.services.work.due_actions import PermanentError

log = logging.getLogger(__name__)

ACTION_KIND = "card_update.complete"
METADATA_LINK = "card_update_link"  # on the Checkout Session and its SetupIntent


class Outcome:
    PAID = "paid"
    DECLINED = "declined"
    AUTHENTICATION_REQUIRED = "authentication_required"
    NOTHING_DUE = "nothing_due"  # the case closed meanwhile: the card is saved, nothing charged


@dataclass(frozen=True)
class Target:
    """What the Stripe calls need, read in a transaction before making them."""

    link_id: int
    case_id: int | None  # None: an expiring-card link, nothing to pay
    customer_id: str
    subscription_id: str | None
    invoice_id: str | None
    case_active: bool

    @classmethod
    def of(cls, link: CardUpdateLink, case: RecoveryCase | None) -> Target:
        if case is None:
            return cls(link.id, None, link.customer_id, link.subscription_id, None, False)
        return cls(
            link_id=link.id,
            case_id=case.id,
            customer_id=link.customer_id,
            subscription_id=case.subscription_id,
            invoice_id=case.invoice_id,
            case_active=CaseStatus(case.status) not in TERMINAL,
        )

    def key(self, setup_intent_id: str) -> str:
        if self.case_id is None:
            return f"card_update_link:{self.link_id}:{setup_intent_id}"
        return pay_key(self.case_id, setup_intent_id)


@dataclass(frozen=True)
class SavedCard:
    """A card the customer saved in Checkout, as the Stripe API (not the redirect) reports it."""

    setup_intent_id: str
    payment_method_id: str
    payment_method: Mapping[str, Any] | None  # expanded, when Stripe gave it


@dataclass(frozen=True)
class Result:
    outcome: str
    card: SavedCard
    invoice: Mapping[str, Any] | None = None
    hosted_invoice_url: str | None = None
    decline_code: str | None = None


def saved_card(intent: Mapping[str, Any], link_id: int, customer_id: str) -> SavedCard | None:
    """The card of a SetupIntent, if it succeeded, belongs to this customer and was started
    from this link. Anything else is not ours to act on."""
    metadata = intent.get("metadata") or {}
    pm = intent.get("payment_method")
    pm_id = ref(pm)
    if (
        intent.get("object") != "setup_intent"
        or intent.get("status") != "succeeded"
        or ref(intent.get("customer")) != customer_id
        or str(metadata.get(METADATA_LINK)) != str(link_id)
        or not pm_id
    ):
        return None
    return SavedCard(str(intent["id"]), pm_id, pm if isinstance(pm, Mapping) else None)


def card_from_checkout(
    checkout: Mapping[str, Any], link_id: int, customer_id: str
) -> SavedCard | None:
    """The card of a completed setup-mode Checkout Session (setup_intent expanded)."""
    metadata = checkout.get("metadata") or {}
    intent = checkout.get("setup_intent")
    if (
        checkout.get("mode") != "setup"
        or checkout.get("status") != "complete"
        or ref(checkout.get("customer")) != customer_id
        or str(metadata.get(METADATA_LINK)) != str(link_id)
        or not isinstance(intent, Mapping)
    ):
        return None
    return saved_card(intent, link_id, customer_id)


def pay_key(case_id: int, setup_intent_id: str) -> str:
    return f"case:{case_id}:card_update:{setup_intent_id}"


def put_card_to_work(gateway: Any, target: Target, card: SavedCard) -> Result:
    """Stripe calls only: the new card becomes the default, then the open invoice is paid.
    Transient Stripe errors propagate (the caller retries with the same keys)."""
    key = target.key(card.setup_intent_id)
    gateway.update_customer_default_payment_method(
        target.customer_id, card.payment_method_id, idempotency_key=f"{key}:customer_default"
    )
    if target.subscription_id:
        gateway.set_subscription_default_payment_method(
            target.subscription_id,
            card.payment_method_id,
            idempotency_key=f"{key}:subscription_default",
        )
    if not target.case_active or target.invoice_id is None:
        return Result(Outcome.NOTHING_DUE, card)
    try:
        paid = gateway.pay_invoice(
            target.invoice_id, idempotency_key=key, payment_method=card.payment_method_id
        )
    except AuthenticationRequired as exc:
        return Result(
            Outcome.AUTHENTICATION_REQUIRED, card, hosted_invoice_url=exc.hosted_invoice_url
        )
    except CardDeclined as exc:
        return Result(Outcome.DECLINED, card, decline_code=exc.decline_code or exc.code)
    except InvalidRequest as exc:
        # Paid or voided meanwhile (Stripe refuses to pay it): learn its state.
        invoice = gateway.retrieve_invoice(target.invoice_id)
        log.info("card update: invoice not payable (%s): %s", invoice.get("status"), exc.message)
        outcome = Outcome.PAID if invoice.get("status") == "paid" else Outcome.NOTHING_DUE
        return Result(outcome, card, invoice=invoice)
    if paid.get("status") == "paid":
        return Result(Outcome.PAID, card, invoice=paid)
    return Result(Outcome.DECLINED, card, invoice=paid)


def already_done(link: CardUpdateLink, setup_intent_id: str) -> bool:
    return link.last_setup_intent_id == setup_intent_id and link.last_outcome is not None


def cancel_expiry_notices(session: Session, subscription_id: str, now: datetime) -> int:
    """The card was changed through the link: no more "your card expires" for this
    subscription (whichever card they were about)."""
    abouts = session.scalars(
        select(OutboxMessage.about)
        .where(OutboxMessage.about.like(f"expiry:{subscription_id}:%"))
        .where(OutboxMessage.status == MessageStatus.PENDING)
        .distinct()
    ).all()
    return sum(outbox.cancel(session, about, now) for about in abouts)


def record_outcome(
    session: Session,
    link: CardUpdateLink,
    case: RecoveryCase | None,
    result: Result,
    now: datetime,
    *,
    on_page: bool = False,
) -> None:
    """Database only, in the caller's transaction; a second call for the same card is a no-op.
    `on_page`: the card-update page shows the outcome to the customer as it is recorded (not
    so when the worker finishes a card whose customer closed the tab)."""
    card = result.card
    if already_done(link, card.setup_intent_id):
        return
    ts = int(now.timestamp())
    if card.payment_method is not None:
        mirror.apply_card(session, card_state(card.payment_method), ts)
    if case is None:  # an expiring-card link: the card is the default now, nothing to pay
        link.completed_at = link.completed_at or now
        link.last_setup_intent_id = card.setup_intent_id
        link.last_outcome = result.outcome
        if link.subscription_id:
            cancel_expiry_notices(session, link.subscription_id, now)
        return
    if result.invoice is not None:
        mirror.apply_invoice(session, invoice_state(result.invoice), ts)
    key = pay_key(case.id, card.setup_intent_id)
    brand = last4 = None
    if card.payment_method is not None:
        details = card.payment_method.get("card") or {}
        brand, last4 = details.get("brand"), details.get("last4")
    case_log.record(
        session,
        case,
        now,
        "card_updated",
        "the customer saved a new card through the card-update link",
        {
            "link_id": link.id,
            "setup_intent": card.setup_intent_id,
            "payment_method": card.payment_method_id,
            "brand": brand,
            "last4": last4,
            "outcome": result.outcome,
            "on_page": on_page,
        },
        f"{key}:card",
    )
    link.completed_at = link.completed_at or now
    link.last_setup_intent_id = card.setup_intent_id
    link.last_outcome = result.outcome
    if result.outcome == Outcome.PAID:
        amount = int((result.invoice or {}).get("amount_paid") or case.amount_due)
        case_state.mark_recovered(
            session, case, RecoveredVia.CARD_UPDATE_LINK, amount, now, override=True
        )
    elif result.outcome == Outcome.DECLINED:
        link.checkout_round += 1  # "try another card" needs a new Checkout Session
        case_log.record(
            session,
            case,
            now,
            "card_update_declined",
            f"the new card was declined: {result.decline_code or 'declined'}",
            {"link_id": link.id, "decline_code": result.decline_code},
            f"{key}:declined",
        )
    elif result.outcome == Outcome.AUTHENTICATION_REQUIRED:
        case_state.await_authentication(session, case, result.hosted_invoice_url, now)


# A customer whose new card just failed on the card-update page read so there, with "Try another
# card": a reminder sequence the failure sets off (a card to replace, a payment to confirm)
# starts the next day, at the reminders' send hour in their time zone (messaging/reminders.py),
# instead of telling them again within seconds, while they may still be on the page. Paid
# meanwhile, it never goes out (a case closing cancels what is pending).
_SEEN_WITHIN = timedelta(hours=1)  # how far back a failure on the page counts as just seen


def seen_failing_on_the_page(session: Session, case_id: int, now: datetime) -> datetime | None:
    """When the customer last saw a new card fail for this case on the card-update page, if
    within the last hour; None otherwise (or when the worker recorded it: the tab was closed)."""
    rows = session.execute(
        select(CaseEvent.at, CaseEvent.data)
        .where(CaseEvent.case_id == case_id, CaseEvent.kind == "card_updated")
        .where(CaseEvent.at >= now - _SEEN_WITHIN)
    ).all()
    seen = [
        at
        for at, data in rows
        if (data or {}).get("on_page") and data.get("outcome") != Outcome.PAID
    ]
    return max(seen, default=None)


# ---- the tab-closed path: webhooks -> due action -> worker ---------------------------------------


def _schedule(ctx: ProcessingContext, link_ref: Any, setup_intent_id: str | None) -> None:
    if not setup_intent_id or not str(link_ref or "").isdigit():
        return
    link = ctx.session.get(CardUpdateLink, int(link_ref))
    if link is None:
        return
    now = ctx.clock.now()
    due_actions.schedule(
        ctx.session,
        kind=ACTION_KIND,
        # Not the case's subject: closing the case must not cancel saving the customer's card.
        subject=f"card-update:{link.id}",
        dedupe_key=f"card_update:{link.id}:{setup_intent_id}:complete",
        due_at=now,
        now=now,
        payload={"link_id": link.id, "setup_intent_id": setup_intent_id},
    )


def on_checkout_completed(
    ctx: ProcessingContext, event: Mapping[str, Any], obj: Mapping[str, Any]
) -> None:
    if obj.get("mode") == "setup":
        _schedule(ctx, (obj.get("metadata") or {}).get(METADATA_LINK), ref(obj.get("setup_intent")))


def on_setup_intent_succeeded(
    ctx: ProcessingContext, event: Mapping[str, Any], obj: Mapping[str, Any]
) -> None:
    _schedule(ctx, (obj.get("metadata") or {}).get(METADATA_LINK), ref(obj.get("id")))


@dataclass(frozen=True)
class Completion:
    link_id: int
    case_id: int | None
    setup_intent_id: str
    target: Target


def decide_complete(ctx: ActionContext, action: Claimed) -> Completion | None:
    link = ctx.session.get(CardUpdateLink, int(action.payload["link_id"]), with_for_update=True)
    seti = str(action.payload["setup_intent_id"])
    if link is None or already_done(link, seti):
        return None
    case = None
    if link.case_id is not None:
        case = ctx.session.get(RecoveryCase, link.case_id, with_for_update=True)
        if case is None:
            return None
    return Completion(link.id, link.case_id, seti, Target.of(link, case))


def call_complete(providers: Providers, plan: Completion, deadline: Deadline) -> Result:
    gateway = providers.gateway
    intent = gateway.retrieve_setup_intent(plan.setup_intent_id)
    card = saved_card(intent, plan.link_id, plan.target.customer_id)
    if card is None:
        raise PermanentError(
            f"SetupIntent {plan.setup_intent_id} is not a succeeded card of link {plan.link_id}"
        )
    return put_card_to_work(gateway, plan.target, card)


def record_complete(ctx: ActionContext, action: Claimed, plan: Completion, result: Result) -> None:
    link = ctx.session.get(CardUpdateLink, plan.link_id, with_for_update=True)
    if link is None:
        return
    case = None
    if plan.case_id is not None:
        case = ctx.session.get(RecoveryCase, plan.case_id, with_for_update=True)
    record_outcome(ctx.session, link, case, result, ctx.clock.now())


# The tab-closed path: the Stripe calls with no transaction open, the outcome recorded after.
# Whichever of this and the `/done` page records first wins; the other finds it done.
run_complete = ThreePhase(decide=decide_complete, call=call_complete, record=record_complete)
