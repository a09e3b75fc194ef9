"""An event's `processed_at` is when its batch's work was done (stamped just before the batch
commits), not when the batch was claimed: receipt to `processed_at` is how long the event really
waited to be processed (bench/webhook_ingest.py reports it)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from recovery.adapters.clock import FrozenClock
from recovery.models import StripeEvent
from recovery.runtime import Runtime
from recovery.services.events import inbox
from tests.support import stripe_payloads as sp


def test_processed_at_is_when_the_batch_ended_not_when_it_was_claimed(
    runtime: Runtime, clock: FrozenClock
) -> None:
    def slow(ctx: Any, event: Any, obj: Any) -> None:
        clock.advance(timedelta(seconds=2))  # the reaction's work takes time

    runtime.handlers = runtime.handlers.with_reaction("customer.created", slow)
    now = int(clock.now().timestamp())
    for i in range(3):
        body = sp.body_of(sp.event("customer.created", sp.customer(f"cus_{i}"), now + i))
        parsed, _ = inbox.parse_event(body)
        assert inbox.ingest(runtime.db, parsed, body, clock.now())
    claimed_at = clock.now()
    assert inbox.process_pending(runtime.db, runtime.processing_context, clock) == 3
    with runtime.db.transaction() as s:
        stamps = set(s.scalars(select(StripeEvent.processed_at)))
    assert stamps == {claimed_at + timedelta(seconds=6)}  # one batch, stamped as it ended
