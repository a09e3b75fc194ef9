"""The gates that decide which reactions an event runs (services/events/gates.py): a customer's
metadata contacts are synced only when there is something to sync, and a subscription's update
re-steers the customer's cases only when the card Stripe will charge changed. Skipping must
never leave a state other than running would have."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from recovery.adapters.clock import FrozenClock
from recovery.adapters.stripe.errors import CardDeclined
from recovery.adapters.stripe_fake import FakeStripeGateway
from recovery.models import AccountContact, CaseEvent, EventStatus, StripeEvent
from recovery.runtime import Runtime
from recovery.services.cases import reactions, scheduling
from recovery.services.outreach import contacts
from recovery.services.registry import build_runtime
from tests.conftest import make_settings
from tests.support.outreach import Outreach, outreach_story
from tests.support.scenario import Story


@pytest.fixture
def story(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any
) -> Iterator[Outreach]:
    with outreach_story(database_url, tmp_path, clock, fake_gateway) as made:
        yield made


def _counting(monkeypatch: Any, module: Any, name: str) -> list[str]:
    """Count the calls of a reaction (the registry holds it: wrap what it calls)."""
    calls: list[str] = []
    real = getattr(module, name)

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counting)
    return calls


def _metadata_contacts(rt: Runtime, customer: str) -> list[tuple[str, str | None, bool]]:
    with rt.db.transaction() as s:
        rows = s.scalars(
            select(AccountContact)
            .where(AccountContact.customer_id == customer, AccountContact.source == "metadata")
            .order_by(AccountContact.id)
        )
        return [(c.role, c.email, c.removed_at is None) for c in rows]


def test_metadata_contacts_are_synced_when_named_or_kept_and_only_then(
    story: Outreach, monkeypatch: Any
) -> None:
    synced = _counting(monkeypatch, contacts, "sync_from_metadata")
    plain = story.subscriber(email="lee@example.com")
    assert synced == []  # no contacts named, none kept: nothing to sync (was one per event)

    kim = story.subscriber(metadata={"recovery_billing_email": "ap@example.com"})
    assert synced and _metadata_contacts(story.rt, kim.customer) == [
        ("billing", "ap@example.com", True)
    ]

    # The metadata drops every contact: the event names none, but the one kept must go.
    synced.clear()
    changed = story.fake.store["customer"][kim.customer]
    changed["metadata"] = {}
    story.clock.advance(timedelta(minutes=5))
    story.fake.add_event("customer.updated", changed)
    # ... and in the same batch a rename of the customer without contacts: nothing to sync.
    other = story.fake.store["customer"][plain.customer]
    story.fake.add_event("customer.updated", {**other, "name": "Lee Other"})
    story.deliver()
    assert synced == ["sync_from_metadata"]
    assert _metadata_contacts(story.rt, kim.customer) == [("billing", "ap@example.com", False)]

    # Named again within one batch, then dropped by the customer's next event in it: the batch
    # knows the contact its first event added.
    changed["metadata"] = {"recovery_billing_email": "ap@example.com"}
    story.clock.advance(timedelta(minutes=5))
    story.fake.add_event("customer.updated", dict(changed))
    story.clock.advance(timedelta(seconds=5))
    story.fake.add_event("customer.updated", {**changed, "metadata": {}})
    story.deliver()
    assert _metadata_contacts(story.rt, kim.customer) == [("billing", "ap@example.com", False)]


@pytest.fixture
def runtime_with_cases(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: FakeStripeGateway
) -> Runtime:
    return build_runtime(make_settings(database_url, tmp_path), clock=clock, gateway=fake_gateway)


def test_a_subscription_update_re_steers_cases_only_when_its_default_card_moved(
    runtime_with_cases: Runtime,
    fake_gateway: FakeStripeGateway,
    clock: FrozenClock,
    monkeypatch: Any,
) -> None:
    story = Story(runtime_with_cases, fake_gateway, clock)
    b = story.customer()
    story.deliver()
    fake_gateway.fail_next_payment(b.invoice, "generic_decline")
    with pytest.raises(CardDeclined):
        fake_gateway.pay_invoice(b.invoice, idempotency_key="renewal")
    story.deliver()
    assert story.case(b.invoice).status == "retrying"

    steered: list[str] = []
    real = reactions._reevaluate

    def counting(ctx: Any, case: Any, event: Any) -> None:
        steered.append(str(event["type"]))
        real(ctx, case, event)

    monkeypatch.setattr(reactions, "_reevaluate", counting)
    sub = fake_gateway.store["subscription"][b.subscription]
    clock.advance(timedelta(minutes=5))
    fake_gateway.add_event("customer.subscription.updated", {**sub, "metadata": {"plan": "x"}})
    story.deliver()
    assert steered == []

    clock.advance(timedelta(minutes=5))
    pm = fake_gateway.add_payment_method(b.customer, brand="mastercard")
    fake_gateway.add_event(
        "customer.subscription.updated", {**sub, "default_payment_method": pm["id"]}
    )
    story.deliver()
    assert steered == ["customer.subscription.updated"]


def test_an_invoice_update_of_an_active_case_is_noted_and_decided_once_at_the_batch_end(
    runtime_with_cases: Runtime,
    fake_gateway: FakeStripeGateway,
    clock: FrozenClock,
    monkeypatch: Any,
) -> None:
    story = Story(runtime_with_cases, fake_gateway, clock)
    b = story.customer()
    story.deliver()
    assert story.stripe_charges(b.invoice, decline_code="generic_decline") == "declined"
    case_before = story.case(b.invoice)
    clock.advance(timedelta(hours=20))
    # Stripe's retry is declined for another reason; the invoice's update comes alone after it.
    fake_gateway.fail_next_payment(b.invoice, "insufficient_funds")
    with pytest.raises(CardDeclined):
        fake_gateway.pay_invoice(b.invoice, idempotency_key="stripe-retry")
    fake_gateway.add_event("invoice.updated", fake_gateway.retrieve_invoice(b.invoice))
    steered: list[str] = []
    real = reactions._steer

    def counting(ctx: Any, invoice_id: str, event: Any, **kwargs: Any) -> Any:
        steered.append(str(event["type"]))
        return real(ctx, invoice_id, event, **kwargs)

    monkeypatch.setattr(reactions, "_steer", counting)
    story.deliver()
    # noted by their gates: no reaction of their own
    assert "invoice.updated" not in steered and "invoice.payment_failed" not in steered
    case = story.case(b.invoice)
    # ... and the case was decided on the second decline all the same
    assert case.status == "retrying"
    assert case.decline_code == "insufficient_funds" != case_before.decline_code


def test_the_batch_end_decides_its_noted_cases_together_and_one_by_one_when_one_fails(
    runtime_with_cases: Runtime,
    fake_gateway: FakeStripeGateway,
    clock: FrozenClock,
    monkeypatch: Any,
) -> None:
    story = Story(runtime_with_cases, fake_gateway, clock)
    kim, lee = story.customer(), story.customer()
    story.deliver()
    for b in (kim, lee):
        assert story.stripe_charges(b.invoice, decline_code="generic_decline") == "declined"
    clock.advance(timedelta(hours=20))
    real = scheduling.steer
    decided: list[str] = []

    def broken(session: Any, case: Any, *args: Any) -> Any:
        if case.invoice_id == kim.invoice:
            raise RuntimeError("a bug in the retry policy")
        decided.append(case.invoice_id)
        return real(session, case, *args)

    monkeypatch.setattr(scheduling, "steer", broken)
    together: list[list[int]] = []
    real_deferred = reactions.reevaluate_deferred

    def counting(runtime: Any, session: Any, case_ids: Any = None, **kwargs: Any) -> Any:
        together.append(sorted(case_ids or ()))
        return real_deferred(runtime, session, case_ids, **kwargs)

    monkeypatch.setattr(reactions, "reevaluate_deferred", counting)
    for b in (kim, lee):  # both cases' re-evaluations noted in one batch
        fake_gateway.fail_next_payment(b.invoice, "insufficient_funds")
        with pytest.raises(CardDeclined):
            fake_gateway.pay_invoice(b.invoice, idempotency_key=f"stripe-retry-{b.invoice}")
    story.deliver()
    # Kim's case failed together with Lee's (in the batch's first run, without savepoints, and
    # again in the careful run's one savepoint), then alone: Lee's was decided all the same ...
    kim_case, lee_case = story.case(kim.invoice).id, story.case(lee.invoice).id
    both = sorted((kim_case, lee_case))
    assert together == [both, both, [kim_case], [lee_case]]
    assert story.case(lee.invoice).decline_code == "insufficient_funds"
    assert decided[-1] == lee.invoice
    # ... and Kim's events that asked are retried later, its case as it was.
    assert story.case(kim.invoice).decline_code != "insufficient_funds"
    with runtime_with_cases.db.transaction() as s:
        pending = s.scalars(
            select(StripeEvent.id).where(StripeEvent.status == EventStatus.PENDING)
        ).all()
    assert pending


def test_a_first_failure_in_a_batch_opens_its_case_without_looking_for_one(
    runtime_with_cases: Runtime, fake_gateway: FakeStripeGateway, clock: FrozenClock
) -> None:
    """The batch knows which invoices and customers have cases: a renewal's first failure (its
    charge, its PaymentIntent, its invoice) opens the case without the locking reads that would
    find none, and what the opening moved is taken from the session rather than read back. The
    case is the same for it: opened, decided, its reminders planned; the next failure finds it."""
    story = Story(runtime_with_cases, fake_gateway, clock)
    b = story.customer()
    story.deliver()
    seen: list[str] = []

    def count(*args: Any) -> None:
        seen.append(" ".join(str(args[2]).split()))

    engine = runtime_with_cases.db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        assert story.stripe_charges(b.invoice, decline_code="generic_decline") == "declined"
    finally:
        event.remove(engine, "before_cursor_execute", count)
    # the invoice's case (with its invoice), the customer's active cases, the moved case's keys
    lookups = [
        sql
        for sql in seen
        if "FROM recovery_cases JOIN invoices" in sql
        or ("FROM recovery_cases" in sql and "recovery_cases.status IN" in sql)
        or sql.startswith(
            "SELECT recovery_cases.id, recovery_cases.invoice_id, recovery_cases.customer_id, "
            "recovery_cases.subscription_id, recovery_cases.status FROM recovery_cases WHERE"
        )
    ]
    assert lookups == [], lookups
    first = story.case(b.invoice)
    assert (first.status, first.decline_code) == ("retrying", "generic_decline")
    with runtime_with_cases.db.transaction() as s:
        kinds = s.scalars(
            select(CaseEvent.kind).where(CaseEvent.case_id == first.id).order_by(CaseEvent.id)
        ).all()
    assert kinds[0] == "opened" and "decision" in kinds and "reminders" in kinds, kinds
    clock.advance(timedelta(hours=20))
    assert story.stripe_charges(b.invoice, decline_code="insufficient_funds") == "declined"
    second = story.case(b.invoice)
    assert second.id == first.id
    assert second.decline_code == "insufficient_funds"
