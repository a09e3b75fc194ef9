"""The first reaction to every Stripe event: its object into the mirror (newest state wins).

Each function takes (ctx, event, data.object); `recovery.services.registry` lists which one
runs for which event type, before any other reaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from recovery.domain import stripe_objects as so
from recovery.runtime import ProcessingContext
from recovery.services.events import mirror


def customer(ctx: ProcessingContext, event: Mapping[str, Any], obj: Mapping[str, Any]) -> None:
    deleted = event["type"] == "customer.deleted"
    state = so.customer_state(obj, deleted=deleted)
    mirror.apply_customer(ctx.session, state, event["created"], ctx.changes)


def card(ctx: ProcessingContext, event: Mapping[str, Any], obj: Mapping[str, Any]) -> None:
    state = so.card_state(obj)
    if event["type"] == "payment_method.detached":
        # The detached object still names no customer; make that explicit for old versions.
        state = so.CardState(**{**state.__dict__, "customer_id": None})
    mirror.apply_card(ctx.session, state, event["created"], ctx.changes)


def subscription(ctx: ProcessingContext, event: Mapping[str, Any], obj: Mapping[str, Any]) -> None:
    state = so.subscription_state(obj)
    mirror.apply_subscription(ctx.session, state, event["created"], ctx.changes)


def invoice(ctx: ProcessingContext, event: Mapping[str, Any], obj: Mapping[str, Any]) -> None:
    state = so.invoice_state(obj)
    if event["type"] == "invoice.deleted":
        state = so.InvoiceState(**{**state.__dict__, "status": "deleted"})
    mirror.apply_invoice(ctx.session, state, event["created"], ctx.changes)


def upcoming(ctx: ProcessingContext, event: Mapping[str, Any], obj: Mapping[str, Any]) -> None:
    # An upcoming invoice has no id and is not a Stripe object yet; nothing to mirror. The
    # expiry tracker reads renewal dates from subscriptions instead.
    return None


def charge(ctx: ProcessingContext, event: Mapping[str, Any], obj: Mapping[str, Any]) -> None:
    attempt = so.attempt_from_charge(obj)
    mirror.apply_attempt(ctx.session, attempt, event["created"], ctx.changes)


def payment_intent(
    ctx: ProcessingContext, event: Mapping[str, Any], obj: Mapping[str, Any]
) -> None:
    attempt = so.attempt_from_payment_intent(obj)
    if attempt is not None:
        mirror.apply_attempt(ctx.session, attempt, event["created"], ctx.changes)


def invoice_payment(
    ctx: ProcessingContext, event: Mapping[str, Any], obj: Mapping[str, Any]
) -> None:
    invoice_id = so.ref(obj.get("invoice"))
    payment = obj.get("payment")
    intent = so.ref(payment.get("payment_intent")) if isinstance(payment, Mapping) else None
    if invoice_id and intent:
        mirror.link_invoice_payment(ctx.session, invoice_id, intent)


def setup_intent(ctx: ProcessingContext, event: Mapping[str, Any], obj: Mapping[str, Any]) -> None:
    pm = obj.get("payment_method")
    if isinstance(pm, Mapping) and pm.get("id"):
        mirror.apply_card(ctx.session, so.card_state(pm), event["created"], ctx.changes)


def nothing_to_mirror(
    ctx: ProcessingContext, event: Mapping[str, Any], obj: Mapping[str, Any]
) -> None:
    """Handled by reactions only (e.g. checkout.session.completed -> card update)."""
