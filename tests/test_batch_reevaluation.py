"""A worker's batch re-steers an existing case once, with everything the batch told, instead of
once per event of an invoice's failure (services/cases/reactions.py): the case ends as it does
when the same events come one batch each; a payment in the same batch is not taken for the end
of dunning; a re-evaluation that fails sends the events that asked for it back to be retried."""

from __future__ import annotations

import contextlib
import json
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from recovery.adapters.clock import FrozenClock
from recovery.adapters.stripe.errors import CardDeclined
from recovery.adapters.stripe_fake import FakeStripeGateway
from recovery.models import CaseEvent, DueAction, EventStatus, RecoveryCase, StripeEvent
from recovery.runtime import Runtime
from recovery.services.cases import scheduling
from recovery.services.events import inbox
from recovery.services.registry import build_runtime
from tests.conftest import START, make_settings
from tests.support.scenario import Story


class _Chunked(Story):
    """A story whose deliveries come `chunk` events to a batch."""

    def __init__(self, runtime: Runtime, fake: FakeStripeGateway, clock: FrozenClock, chunk: int):
        super().__init__(runtime, fake, clock)
        self.chunk = chunk

    def deliver(self) -> int:
        fresh = self.fake.events[self._delivered :]
        self._delivered = len(self.fake.events)
        bodies = [json.dumps(e).encode() for e in fresh]
        inbox.receive_events(
            self.rt.db, bodies, self.rt.processing_context, self.clock, chunk=self.chunk
        )
        return len(bodies)


def _lines(rt: Runtime, case_id: int, kind: str) -> int:
    with rt.db.transaction() as s:
        return int(
            s.scalar(
                select(func.count()).where(CaseEvent.case_id == case_id, CaseEvent.kind == kind)
            )
            or 0
        )


def _two_failures(tmp_path: Path, template: Path, chunk: int, monkeypatch: Any) -> dict[str, Any]:
    """A renewal declined (the case opens), then Stripe's own retry declined for another reason:
    the second failure's events delivered `chunk` to a batch."""
    path = tmp_path / f"chunk{chunk}.db"
    shutil.copy(template, path)
    clock = FrozenClock(START)
    fake = FakeStripeGateway(clock=clock)
    rt = build_runtime(
        make_settings(f"sqlite:///{path}", tmp_path / f"i{chunk}"), clock=clock, gateway=fake
    )
    try:
        story = _Chunked(rt, fake, clock, chunk=100)
        b = story.customer()
        story.deliver()
        assert story.stripe_charges(b.invoice, decline_code="generic_decline") == "declined"
        clock.advance(timedelta(hours=20))
        story.chunk = chunk
        before = len(fake.events)
        fake.fail_next_payment(b.invoice, "insufficient_funds")
        with contextlib.suppress(CardDeclined):
            fake.pay_invoice(b.invoice, idempotency_key="stripe-retry")
        # and, as Stripe does, the invoice's and the subscription's own updates
        fake.add_event("invoice.updated", fake.retrieve_invoice(b.invoice))
        fake.add_event("customer.subscription.updated", fake.retrieve_subscription(b.subscription))
        told = [e["type"] for e in fake.events[before:]]
        asked = []
        real = scheduling.steer

        def counted(session: Any, case: RecoveryCase, *args: Any) -> Any:
            asked.append(case.id)
            return real(session, case, *args)

        with monkeypatch.context() as patched:
            patched.setattr(scheduling, "steer", counted)
            story.deliver()
        case = story.case(b.invoice)
        retries = [(a.kind, a.dedupe_key, a.due_at) for a in story.pending(case.id)]
        return {
            "told": told,
            "decisions": _lines(rt, case.id, "decision"),
            "policy_asked": len(asked),
            "state": (
                case.status,
                case.awaiting,
                case.decline_category,
                case.decline_code,
                case.next_retry_at,
                case.next_step_reason,
                case.stripe_next_attempt_at,
                retries,
            ),
        }
    finally:
        rt.db.dispose()


def test_a_failure_told_by_several_events_in_one_batch_ends_as_one_by_one(
    tmp_path: Path, sqlite_template: Path, monkeypatch: Any
) -> None:
    one_by_one = _two_failures(tmp_path, sqlite_template, 1, monkeypatch)
    batched = _two_failures(tmp_path, sqlite_template, 100, monkeypatch)
    assert len(batched["told"]) >= 4, batched["told"]
    assert batched["state"] == one_by_one["state"]
    assert batched["state"][0] == "retrying"
    # ... each asked the retry policy again one by one; the batch asked it once.
    assert one_by_one["policy_asked"] >= 3
    assert batched["policy_asked"] == 1
    assert batched["decisions"] == one_by_one["decisions"] == 2  # the opening's, and this one


def test_a_failure_and_its_payment_in_one_batch_recover_the_case_without_losing_it(
    runtime: Runtime, fake_gateway: FakeStripeGateway, clock: FrozenClock
) -> None:
    story = Story(runtime, fake_gateway, clock)
    b = story.customer()
    story.deliver()
    assert story.stripe_charges(b.invoice, decline_code="generic_decline") == "declined"
    clock.advance(timedelta(hours=20))
    # Stripe's retry is declined and the customer pays minutes later: one batch.
    fake_gateway.fail_next_payment(b.invoice, "do_not_honor")
    with contextlib.suppress(CardDeclined):
        fake_gateway.pay_invoice(b.invoice, idempotency_key="stripe-retry")
    clock.advance(timedelta(minutes=3))
    fake_gateway.pay_invoice(b.invoice, idempotency_key="customer-paid")
    assert story.deliver() > 4
    case = story.case(b.invoice)
    assert case.status == "recovered"
    # The noted re-evaluation would have read the paid invoice: it is dropped, not made.
    assert _lines(runtime, case.id, "lost") == 0
    with runtime.db.transaction() as s:
        ends = s.scalar(
            select(func.count()).where(DueAction.dedupe_key == f"case:{case.id}:end_of_dunning")
        )
    assert ends == 0


def test_a_re_evaluation_that_fails_sends_the_events_that_asked_for_it_back(
    runtime: Runtime, fake_gateway: FakeStripeGateway, clock: FrozenClock, monkeypatch: Any
) -> None:
    story = Story(runtime, fake_gateway, clock)
    b = story.customer()
    other = story.customer()
    story.deliver()
    assert story.stripe_charges(b.invoice, decline_code="generic_decline") == "declined"
    clock.advance(timedelta(hours=20))
    real = scheduling.steer

    def broken(session: Any, case: RecoveryCase, *args: Any) -> Any:
        if case.invoice_id == b.invoice:
            raise RuntimeError("a bug in the retry policy")
        return real(session, case, *args)

    monkeypatch.setattr(scheduling, "steer", broken)
    before = len(fake_gateway.events)
    fake_gateway.add_event("invoice.updated", fake_gateway.retrieve_invoice(b.invoice))
    fake_gateway.add_event("customer.updated", fake_gateway.retrieve_customer(other.customer))
    asked, unrelated = (str(e["id"]) for e in fake_gateway.events[before:])
    story.deliver()
    with runtime.db.transaction() as s:
        rows = {
            r.id: r
            for r in s.execute(
                select(StripeEvent).where(StripeEvent.id.in_([asked, unrelated]))
            ).scalars()
        }
    assert rows[unrelated].status == EventStatus.PROCESSED
    assert rows[asked].status == EventStatus.PENDING  # retried with backoff
    assert rows[asked].attempts == 1
    assert "a bug in the retry policy" in (rows[asked].last_error or "")
