"""What each Stripe event type does: a dispatch table from type to handlers.

First the object in the event updates the mirror (newest state wins); then any reactions other
features registered for that type run in the same transaction (opening a recovery case, for
instance). Processing only touches the database: anything that calls out (Stripe, email, SMS)
is written as a due action and done by the worker after commit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from recovery.adapters.clock import Clock
from recovery.domain import stripe_objects as so
from recovery.services import mirror


@dataclass
class ProcessingContext:
    session: Session
    clock: Clock
    services: Mapping[str, Any] = field(default_factory=dict)


ContextFactory = Callable[[Session], ProcessingContext]
Handler = Callable[[ProcessingContext, Mapping[str, Any], Mapping[str, Any]], None]
"""handler(ctx, event, data.object)"""


def _customer(ctx: ProcessingContext, event: Mapping[str, Any], obj: Mapping[str, Any]) -> None:
    deleted = event["type"] == "customer.deleted"
    mirror.apply_customer(ctx.session, so.customer_state(obj, deleted=deleted), event["created"])


def _card(ctx: ProcessingContext, event: Mapping[str, Any], obj: Mapping[str, Any]) -> None:
    state = so.card_state(obj)
    if event["type"] == "payment_method.detached":
        # The detached object still names no customer; make that explicit for old versions.
        state = so.CardState(**{**state.__dict__, "customer_id": None})
    mirror.apply_card(ctx.session, state, event["created"])


def _subscription(ctx: ProcessingContext, event: Mapping[str, Any], obj: Mapping[str, Any]) -> None:
    mirror.apply_subscription(ctx.session, so.subscription_state(obj), event["created"])


def _invoice(ctx: ProcessingContext, event: Mapping[str, Any], obj: Mapping[str, Any]) -> None:
    state = so.invoice_state(obj)
    if event["type"] == "invoice.deleted":
        state = so.InvoiceState(**{**state.__dict__, "status": "deleted"})
    mirror.apply_invoice(ctx.session, state, event["created"])


def _upcoming(ctx: ProcessingContext, event: Mapping[str, Any], obj: Mapping[str, Any]) -> None:
    # An upcoming invoice has no id and is not a Stripe object yet; nothing to mirror. The
    # expiry tracker reads renewal dates from subscriptions instead.
    return None


def _charge(ctx: ProcessingContext, event: Mapping[str, Any], obj: Mapping[str, Any]) -> None:
    mirror.apply_attempt(ctx.session, so.attempt_from_charge(obj), event["created"])


def _payment_intent(
    ctx: ProcessingContext, event: Mapping[str, Any], obj: Mapping[str, Any]
) -> None:
    attempt = so.attempt_from_payment_intent(obj)
    if attempt is not None:
        mirror.apply_attempt(ctx.session, attempt, event["created"])


def _invoice_payment(
    ctx: ProcessingContext, event: Mapping[str, Any], obj: Mapping[str, Any]
) -> None:
    invoice_id = so.ref(obj.get("invoice"))
    payment = obj.get("payment")
    intent = so.ref(payment.get("payment_intent")) if isinstance(payment, Mapping) else None
    if invoice_id and intent:
        mirror.link_invoice_payment(ctx.session, invoice_id, intent)


def _setup_intent(ctx: ProcessingContext, event: Mapping[str, Any], obj: Mapping[str, Any]) -> None:
    pm = obj.get("payment_method")
    if isinstance(pm, Mapping) and pm.get("id"):
        mirror.apply_card(ctx.session, so.card_state(pm), event["created"])


def _nothing_to_mirror(
    ctx: ProcessingContext, event: Mapping[str, Any], obj: Mapping[str, Any]
) -> None:
    """Handled by reactions only (e.g. checkout.session.completed -> card update)."""


MIRROR_HANDLERS: dict[str, Handler] = {
    "customer.created": _customer,
    "customer.updated": _customer,
    "customer.deleted": _customer,
    "customer.source.expiring": _card,
    "payment_method.attached": _card,
    "payment_method.updated": _card,
    "payment_method.automatically_updated": _card,
    "payment_method.detached": _card,
    "customer.subscription.created": _subscription,
    "customer.subscription.updated": _subscription,
    "customer.subscription.deleted": _subscription,
    "customer.subscription.paused": _subscription,
    "customer.subscription.resumed": _subscription,
    "customer.subscription.trial_will_end": _subscription,
    "customer.subscription.pending_update_applied": _subscription,
    "invoice.created": _invoice,
    "invoice.finalized": _invoice,
    "invoice.updated": _invoice,
    "invoice.paid": _invoice,
    "invoice.payment_succeeded": _invoice,
    "invoice.payment_failed": _invoice,
    "invoice.payment_action_required": _invoice,
    "invoice.marked_uncollectible": _invoice,
    "invoice.voided": _invoice,
    "invoice.deleted": _invoice,
    "invoice.upcoming": _upcoming,
    "invoice_payment.paid": _invoice_payment,
    "charge.failed": _charge,
    "charge.succeeded": _charge,
    "charge.pending": _charge,
    "payment_intent.payment_failed": _payment_intent,
    "payment_intent.succeeded": _payment_intent,
    "payment_intent.requires_action": _payment_intent,
    "setup_intent.succeeded": _setup_intent,
    "checkout.session.completed": _nothing_to_mirror,
}

# Reactions other features add (recovery cases, card-update completion, ...), run after the
# mirror in the same transaction, in registration order.
REACTIONS: dict[str, list[Handler]] = {}


def register_reaction(event_type: str, handler: Handler) -> None:
    handlers = REACTIONS.setdefault(event_type, [])
    if handler not in handlers:
        handlers.append(handler)


def is_handled(event_type: str) -> bool:
    return event_type in MIRROR_HANDLERS or event_type in REACTIONS


def process_payload(ctx: ProcessingContext, event: Mapping[str, Any]) -> bool:
    """Apply one event. False when its type is not one we act on (stored, nothing to do)."""
    event_type = event["type"]
    obj = event["data"]["object"]
    handler = MIRROR_HANDLERS.get(event_type)
    reactions = REACTIONS.get(event_type, [])
    if handler is None and not reactions:
        return False
    if handler is not None:
        handler(ctx, event, obj)
    for reaction in reactions:
        reaction(ctx, event, obj)
    return True
