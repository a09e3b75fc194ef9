"""Billing stories played against the Stripe fake: Stripe's events reach the service as they
would through the webhook, and the worker runs what comes due on the injected clock."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from recovery.adapters.clock import FrozenClock
from recovery.adapters.stripe.errors import AuthenticationRequired, CardDeclined
from recovery.adapters.stripe_fake import FakeStripeGateway
from recovery.models import ActionStatus, DueAction, RecoveryCase
from recovery.runtime import Runtime
from recovery.services.events.inbox import receive_events
from recovery.worker import Worker


@dataclass
class Billing:
    customer: str
    payment_method: str
    subscription: str
    invoice: str


class Story:
    def __init__(self, runtime: Runtime, fake: FakeStripeGateway, clock: FrozenClock) -> None:
        self.rt, self.fake, self.clock = runtime, fake, clock
        self.worker = Worker(runtime, worker_id="story-worker")
        self._delivered = 0

    def deliver(self) -> int:
        """Send the fake's new events to the service, in order, like Stripe's webhooks."""
        fresh = self.fake.events[self._delivered :]
        self._delivered = len(self.fake.events)
        bodies = [json.dumps(e).encode() for e in fresh]
        receive_events(self.rt.db, bodies, self.rt.processing_context, self.clock)
        return len(bodies)

    def customer(
        self,
        *,
        brand: str = "visa",
        funding: str = "debit",
        country: str = "DE",
        amount: int = 2000,
    ) -> Billing:
        cus = self.fake.add_customer(email="kim@example.com", name="Kim", country=country)
        pm = self.fake.add_payment_method(cus["id"], brand=brand, funding=funding)
        self.fake.update_customer_default_payment_method(
            cus["id"], pm["id"], idempotency_key=f"seed:{cus['id']}"
        )
        price = self.fake.add_price(unit_amount=amount)
        sub = self.fake.add_subscription(
            cus["id"], price_id=price["id"], default_payment_method=pm["id"]
        )
        inv = self.fake.add_invoice(cus["id"], subscription_id=sub["id"])
        for event_type, obj in (
            ("customer.created", self.fake.retrieve_customer(cus["id"])),
            ("payment_method.attached", pm),
            ("customer.subscription.created", sub),
        ):
            self.fake.add_event(event_type, obj)
        return Billing(cus["id"], pm["id"], sub["id"], inv["id"])

    def stripe_charges(self, invoice_id: str, **decline: Any) -> str:
        """Stripe's own renewal charge (declined when `decline` is given); events delivered."""
        if decline:
            self.fake.fail_next_payment(invoice_id, **decline)
        outcome = "paid"
        try:
            self.fake.pay_invoice(invoice_id, idempotency_key=f"stripe:{len(self.fake.events)}")
        except CardDeclined:
            outcome = "declined"
        except AuthenticationRequired:
            outcome = "authentication_required"
        self.deliver()
        return outcome

    def case(self, invoice_id: str) -> RecoveryCase:
        with self.rt.db.transaction() as s:
            return s.scalars(
                select(RecoveryCase).where(RecoveryCase.invoice_id == invoice_id)
            ).one()

    def pending(self, case_id: int) -> list[DueAction]:
        with self.rt.db.transaction() as s:
            return list(
                s.scalars(
                    select(DueAction)
                    .where(DueAction.subject == f"case:{case_id}")
                    .where(DueAction.status == ActionStatus.PENDING)
                    .order_by(DueAction.due_at)
                )
            )

    def next_due(self, kind_prefix: str = "") -> datetime | None:
        with self.rt.db.transaction() as s:
            return s.scalar(
                select(DueAction.due_at)
                .where(DueAction.status == ActionStatus.PENDING)
                .where(DueAction.kind.startswith(kind_prefix))
                .order_by(DueAction.due_at)
                .limit(1)
            )

    def run_due(self) -> int:
        """Run what is due now, then deliver the events our Stripe calls caused."""
        ran = self.worker.run_until_idle()
        self.deliver()
        return ran

    def advance_to_next_due(
        self, limit: timedelta = timedelta(days=60), kind_prefix: str = ""
    ) -> bool:
        """Move the clock to the next due action (of a kind, e.g. "case." to step from one
        case action to the next), running everything that comes due on the way."""
        due = self.next_due(kind_prefix)
        if due is None or due > self.clock.now() + limit:
            return False
        if due > self.clock.now():
            self.clock.set(due)
        self.run_due()
        return True
