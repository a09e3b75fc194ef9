"""Re-read an object from Stripe when the mirror cannot tell which of two states is current.

After the fresh state is mirrored, the reactions registered for `recovery.refetched.<object>`
run, so decisions taken on the doubtful state are taken again.
"""

from __future__ import annotations

from typing import Any

from recovery.domain.stripe_objects.states import (
    card_state,
    customer_state,
    invoice_state,
    subscription_state,
)
from recovery.runtime import ActionContext, Claimed, ProcessingContext
from recovery.services.events import mirror
from recovery.services.events.dispatch import process_payload


def run_refetch(ctx: ActionContext, action: Claimed) -> None:
    gateway = ctx.runtime.gateway
    kind, oid = str(action.payload["object"]), str(action.payload["id"])
    ts = int(ctx.clock.now().timestamp())
    obj: dict[str, Any]
    if kind == "customer":
        obj = gateway.retrieve_customer(oid)
        mirror.apply_customer(ctx.session, customer_state(obj), ts)
    elif kind == "payment_method":
        obj = gateway.retrieve_payment_method(oid)
        mirror.apply_card(ctx.session, card_state(obj), ts)
    elif kind == "subscription":
        obj = gateway.retrieve_subscription(oid)
        mirror.apply_subscription(ctx.session, subscription_state(obj), ts)
    elif kind == "invoice":
        obj = gateway.retrieve_invoice(oid)
        mirror.apply_invoice(ctx.session, invoice_state(obj), ts)
    else:
        return
    event = {"type": f"recovery.refetched.{kind}", "created": ts, "data": {"object": obj}}
    process_payload(ProcessingContext(ctx.session, ctx.runtime), event)
