"""Re-read an object from Stripe when the mirror cannot tell which of two states is current.

Three steps (recovery.runtime.ThreePhase): the read happens with no transaction open; then the
fresh state is mirrored, stamped with the fetch time, and the reactions registered for
`recovery.refetched.<object>` run, so decisions taken on the doubtful state are taken again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from recovery.adapters.deadline import Deadline
from recovery.domain import stripe_objects as so
from recovery.runtime import ActionContext, Claimed, ProcessingContext, Providers, ThreePhase
from recovery.services.events import mirror
from recovery.services.events.dispatch import process_payload

REFETCHABLE = ("customer", "payment_method", "subscription", "invoice")


@dataclass(frozen=True)
class Refetch:
    kind: str
    id: str


def decide_refetch(ctx: ActionContext, action: Claimed) -> Refetch | None:
    kind, oid = str(action.payload["object"]), str(action.payload["id"])
    return Refetch(kind, oid) if kind in REFETCHABLE else None


def call_refetch(providers: Providers, plan: Refetch, deadline: Deadline) -> dict[str, Any]:
    gateway = providers.gateway
    read = {
        "customer": gateway.retrieve_customer,
        "payment_method": gateway.retrieve_payment_method,
        "subscription": gateway.retrieve_subscription,
        "invoice": gateway.retrieve_invoice,
    }[plan.kind]
    obj: dict[str, Any] = read(plan.id)
    return obj


def record_refetch(ctx: ActionContext, action: Claimed, plan: Refetch, obj: dict[str, Any]) -> None:
    session, ts = ctx.session, int(ctx.clock.now().timestamp())
    if plan.kind == "customer":
        mirror.apply_customer(session, so.customer_state(obj), ts)
    elif plan.kind == "payment_method":
        mirror.apply_card(session, so.card_state(obj), ts)
    elif plan.kind == "subscription":
        mirror.apply_subscription(session, so.subscription_state(obj), ts)
    else:
        mirror.apply_invoice(session, so.invoice_state(obj), ts)
    event = {"type": f"recovery.refetched.{plan.kind}", "created": ts, "data": {"object": obj}}
    process_payload(ProcessingContext(ctx.session, ctx.runtime), event)


run_refetch = ThreePhase(decide=decide_refetch, call=call_refetch, record=record_refetch)
