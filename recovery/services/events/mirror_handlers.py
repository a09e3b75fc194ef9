"""The first reaction to every Stripe event: its object into the mirror (newest state wins).

Each handler takes (ctx, event, data.object); `recovery.services.registry` lists which one
runs for which event type, before any other reaction. What a handler writes is worked out by
its `ops` (plain data: the rows the event states), so the worker's batches can apply many
events' ops at once (services/events/mirror_batch.py) and a single event applies them here;
both write the same rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from recovery.domain import stripe_objects as so
from recovery.runtime import Changes, ProcessingContext
from recovery.services.events import mirror

Obj = Mapping[str, Any]


@dataclass(frozen=True)
class Link:
    """An invoice paid through a PaymentIntent."""

    invoice_id: str
    payment_intent_id: str


@dataclass(frozen=True)
class Attempt:
    """One payment attempt's fields as one source (a charge, a PaymentIntent) tells them."""

    state: so.AttemptState
    ts: int


Op = mirror.Versioned | Link | Attempt
Ops = Callable[[Obj, Obj], list[Op]]


def apply_ops(session: Session, ops: Sequence[Op], changes: Changes | None = None) -> None:
    """The ops written one by one, a statement or two each (one event's, one action's)."""
    for op in ops:
        if isinstance(op, mirror.Versioned):
            mirror.apply(session, op, changes)
        elif isinstance(op, Link):
            mirror.link_invoice_payment(session, op.invoice_id, op.payment_intent_id)
        else:
            mirror.apply_attempt(session, op.state, op.ts, changes, with_card=False)


def _attempt_ops(attempt: so.AttemptState | None, ts: int) -> list[Op]:
    if attempt is None:
        return []
    ops: list[Op] = []
    if attempt.card is not None:
        ops.append(mirror.card_write(attempt.card, ts))
    if attempt.invoice_id and attempt.payment_intent_id:
        ops.append(Link(attempt.invoice_id, attempt.payment_intent_id))
    ops.append(Attempt(attempt, ts))
    return ops


def customer_ops(event: Obj, obj: Obj) -> list[Op]:
    deleted = event["type"] == "customer.deleted"
    return [mirror.customer_write(so.customer_state(obj, deleted=deleted), event["created"])]


def card_ops(event: Obj, obj: Obj) -> list[Op]:
    state = so.card_state(obj)
    if event["type"] == "payment_method.detached":
        # The detached object still names no customer; make that explicit for old versions.
        state = so.CardState(**{**state.__dict__, "customer_id": None})
    return [mirror.card_write(state, event["created"])]


def subscription_ops(event: Obj, obj: Obj) -> list[Op]:
    return [mirror.subscription_write(so.subscription_state(obj), event["created"])]


def invoice_ops(event: Obj, obj: Obj) -> list[Op]:
    state = so.invoice_state(obj)
    if event["type"] == "invoice.deleted":
        state = so.InvoiceState(**{**state.__dict__, "status": "deleted"})
    return [mirror.invoice_write(state, event["created"])]


def charge_ops(event: Obj, obj: Obj) -> list[Op]:
    return _attempt_ops(so.attempt_from_charge(obj), event["created"])


def payment_intent_ops(event: Obj, obj: Obj) -> list[Op]:
    return _attempt_ops(so.attempt_from_payment_intent(obj), event["created"])


def invoice_payment_ops(event: Obj, obj: Obj) -> list[Op]:
    invoice_id = so.ref(obj.get("invoice"))
    payment = obj.get("payment")
    intent = so.ref(payment.get("payment_intent")) if isinstance(payment, Mapping) else None
    return [Link(invoice_id, intent)] if invoice_id and intent else []


def setup_intent_ops(event: Obj, obj: Obj) -> list[Op]:
    pm = obj.get("payment_method")
    if isinstance(pm, Mapping) and pm.get("id"):
        return [mirror.card_write(so.card_state(pm), event["created"])]
    return []


def no_ops(event: Obj, obj: Obj) -> list[Op]:
    # An upcoming invoice has no id and is not a Stripe object yet; nothing to mirror. The
    # expiry tracker reads renewal dates from subscriptions instead.
    return []


class MirrorHandler:
    """A mirror reaction: its ops, applied in the event's transaction."""

    def __init__(self, ops: Ops, name: str) -> None:
        self.ops = ops
        self.__name__ = self.__qualname__ = name

    def __call__(self, ctx: ProcessingContext, event: Obj, obj: Obj) -> None:
        apply_ops(ctx.session, self.ops(event, obj), ctx.changes)


customer = MirrorHandler(customer_ops, "customer")
card = MirrorHandler(card_ops, "card")
subscription = MirrorHandler(subscription_ops, "subscription")
invoice = MirrorHandler(invoice_ops, "invoice")
upcoming = MirrorHandler(no_ops, "upcoming")
charge = MirrorHandler(charge_ops, "charge")
payment_intent = MirrorHandler(payment_intent_ops, "payment_intent")
invoice_payment = MirrorHandler(invoice_payment_ops, "invoice_payment")
setup_intent = MirrorHandler(setup_intent_ops, "setup_intent")
nothing_to_mirror = MirrorHandler(no_ops, "nothing_to_mirror")
"""Handled by reactions only (e.g. checkout.session.completed -> card update)."""
