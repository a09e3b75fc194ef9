"""The first reaction to every Stripe event: its object into the mirror (newest state wins).

Each function takes (ctx, event, data.object); `recovery.services.registry` lists which one
runs for which event type, before any other reaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from recovery.domain.stripe_objects.attempts import attempt_from_charge, attempt_from_payment_intent
from recovery.domain.stripe_objects.fields import ref
from recovery.domain.stripe_objects.states import (
    CardState,
    InvoiceState,
    card_state,
    customer_state,
    invoice_state,
    subscription_state,
)
from recovery.runtime import ProcessingContext
from recovery.services.events import mirror


def customer(ctx: ProcessingContext, event: Mapping[str, Any], obj: Mapping[str, Any]) -> None:
    deleted = event["type"] == "customer.deleted"
    mirror.apply_customer(ctx.session, customer_state(obj, deleted=deleted), event["created"])


def card(ctx: ProcessingContext, event: Mapping[str, Any], obj: Mapping[str, Any]) -> None:
    state = card_state(obj)
    if event["type"] == "payment_method.detached":
        # The detached object still names no customer; make that explicit for old versions.
        state = CardState(**{**state.__dict__, "customer_id": None})
    mirror.apply_card(ctx.session, state, event["created"])


def subscription(ctx: ProcessingContext, event: Mapping[str, Any], obj: Mapping[str, Any]) -> None:
    mirror.apply_subscription(ctx.session, subscription_state(obj), event["created"])


def invoice(ctx: ProcessingContext, event: Mapping[str, Any], obj: Mapping[str, Any]) -> None:
    state = invoice_state(obj)
    if event["type"] == "invoice.deleted":
        state = InvoiceState(**{**state.__dict__, "status": "deleted"})
    mirror.apply_invoice(ctx.session, state, event["created"])


def upcoming(ctx: ProcessingContext, event: Mapping[str, Any], obj: Mapping[str, Any]) -> None:
    # An upcoming invoice has no id and is not a Stripe object yet; nothing to mirror. The
    # expiry tracker reads renewal dates from subscriptions instead.
    return None


def charge(ctx: ProcessingContext, event: Mapping[str, Any], obj: Mapping[str, Any]) -> None:
    mirror.apply_attempt(ctx.session, attempt_from_charge(obj), event["created"])


def payment_intent(
    ctx: ProcessingContext, event: Mapping[str, Any], obj: Mapping[str, Any]
) -> None:
    attempt = attempt_from_payment_intent(obj)
    if attempt is not None:
        mirror.apply_attempt(ctx.session, attempt, event["created"])


def invoice_payment(
    ctx: ProcessingContext, event: Mapping[str, Any], obj: Mapping[str, Any]
) -> None:
    invoice_id = ref(obj.get("invoice"))
    payment = obj.get("payment")
    intent = ref(payment.get("payment_intent")) if isinstance(payment, Mapping) else None
    if invoice_id and intent:
        mirror.link_invoice_payment(ctx.session, invoice_id, intent)


def setup_intent(ctx: ProcessingContext, event: Mapping[str, Any], obj: Mapping[str, Any]) -> None:
    pm = obj.get("payment_method")
    if isinstance(pm, Mapping) and pm.get("id"):
        mirror.apply_card(ctx.session, card_state(pm), event["created"])


def nothing_to_mirror(
    ctx: ProcessingContext, event: Mapping[str, Any], obj: Mapping[str, Any]
) -> None:
    """Handled by reactions only (e.g. checkout.session.completed -> card update)."""
