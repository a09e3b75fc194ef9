"""Recovery cases end to end against the Stripe fake, on SQLite and PostgreSQL.

Stripe's events reach the service as webhooks would; the worker runs due retries on an
injected clock, so weeks of dunning pass in milliseconds.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from recovery.adapters.clock import FrozenClock
from recovery.models import ActionStatus, CaseEvent, DueAction, Invoice
from recovery.runtime import Runtime
from recovery.services.work import due_actions
from tests.conftest import API_KEY
from tests.support.scenario import Story


@pytest.fixture
def story(runtime: Runtime, fake_gateway: Any, clock: FrozenClock) -> Story:
    return Story(runtime, fake_gateway, clock)


def pay_requests(story: Story, invoice_id: str) -> list[str | None]:
    return [
        r.idempotency_key
        for r in story.fake.requests
        if r.method == "pay_invoice" and r.params["id"] == invoice_id
    ]


def test_failed_renewal_opens_one_case_and_schedules_a_payday_retry(story: Story) -> None:
    b = story.customer(funding="debit", country="DE")
    story.deliver()
    assert story.stripe_charges(b.invoice, decline_code="insufficient_funds") == "declined"
    story.fake.events[:] = story.fake.events + story.fake.events[-3:]  # Stripe resends some
    story.deliver()
    case = story.case(b.invoice)
    assert (case.status, case.decline_category, case.decline_code) == (
        "retrying",
        "soft",
        "insufficient_funds",
    )
    assert case.next_step_reason is not None
    assert "insufficient_funds on a debit card" in case.next_step_reason
    assert "Europe/Berlin" in case.next_step_reason and "payday" in case.next_step_reason
    kinds = sorted(a.kind for a in story.pending(case.id) if a.kind.startswith("case."))
    assert kinds == ["case.auto_advance_off", "case.retry", "case.window_end"]
    assert any(a.kind == "outbox.send" for a in story.pending(case.id))  # the reminders
    retry = next(a for a in story.pending(case.id) if a.kind == "case.retry")
    assert retry.dedupe_key == f"case:{case.id}:attempt:1"
    assert retry.due_at == case.next_retry_at


def test_stripe_stops_its_own_attempts_when_recovery_owns_retries(story: Story) -> None:
    b = story.customer()
    story.deliver()
    story.stripe_charges(b.invoice, decline_code="generic_decline")
    story.run_due()
    updates = [r for r in story.fake.requests if r.method == "update_invoice"]
    assert [(r.params["auto_advance"], r.idempotency_key) for r in updates] == [
        (False, f"case:{story.case(b.invoice).id}:auto_advance_off")
    ]


def test_our_retry_recovers_and_cancels_everything_pending(story: Story) -> None:
    b = story.customer()
    story.deliver()
    story.stripe_charges(b.invoice, decline_code="generic_decline")
    case = story.case(b.invoice)
    assert story.advance_to_next_due(kind_prefix="case.")  # auto-advance off (now)
    assert story.advance_to_next_due(kind_prefix="case.")  # the retry, about a day later
    case = story.case(b.invoice)
    assert (case.status, case.recovered_via, case.amount_recovered) == (
        "recovered",
        "our_retry",
        2000,
    )
    assert pay_requests(story, b.invoice)[-1] == f"case:{case.id}:attempt:1"
    assert story.pending(case.id) == []  # the window-end check is cancelled too


def test_declined_retry_records_details_and_schedules_the_next(story: Story) -> None:
    b = story.customer(brand="mastercard", funding="credit")
    story.deliver()
    story.stripe_charges(b.invoice, decline_code="do_not_honor")
    story.run_due()
    story.fake.fail_next_payment(
        b.invoice, decline_code="do_not_honor", network_advice_code="24", brand="mastercard"
    )
    assert story.advance_to_next_due(kind_prefix="case.")
    case = story.case(b.invoice)
    assert (case.status, case.our_attempts) == ("retrying", 1)
    [retry] = [a for a in story.pending(case.id) if a.kind == "case.retry"]
    assert retry.dedupe_key == f"case:{case.id}:attempt:2"
    with story.rt.db.transaction() as s:
        ours = s.scalars(select(CaseEvent).where(CaseEvent.kind == "our_attempt")).all()
        assert [e.data["decline_code"] for e in ours] == ["do_not_honor"]
        assert ours[0].data["network_advice_code"] == "24"


def test_a_declined_retry_keeps_the_newer_invoice_its_webhooks_brought(story: Story) -> None:
    """The invoice read before our charge is stale once the charge is declined. When the
    charge's webhooks (one attempt more) were processed before our record, recording must not
    put the stale read back over them."""
    b = story.customer()
    story.deliver()
    story.stripe_charges(b.invoice, decline_code="do_not_honor")
    story.run_due()  # Stripe's own retries off
    due = story.next_due("case.retry")
    assert due is not None
    story.clock.set(due)
    story.fake.fail_next_payment(b.invoice, decline_code="do_not_honor")
    claimed = due_actions.claim(story.rt.db, "w", story.clock.now())
    [action] = [a for a in claimed if a.kind == "case.retry"]
    with story.rt.db.transaction() as s:
        decided = due_actions.decide(story.rt, s, action, "w")
    assert isinstance(decided, due_actions.Decided)
    called = due_actions.call(story.rt, decided)
    assert called.outcome.kind == "declined"
    story.clock.advance(timedelta(seconds=2))
    story.deliver()  # the decline's webhooks, processed before our record
    with story.rt.db.transaction() as s:
        assert due_actions.record(story.rt, s, called, "w") == "done"
    with story.rt.db.transaction() as s:
        invoice = s.get(Invoice, b.invoice)
        assert invoice is not None
        assert invoice.attempt_count == story.fake.store["invoice"][b.invoice]["attempt_count"]
    assert story.case(b.invoice).our_attempts == 1


def test_a_retry_skipped_for_stripes_own_attempt_comes_back_after_it_fails(
    story: Story,
) -> None:
    """Our retry stands aside when Stripe is about to charge; if Stripe's charge fails, our
    attempt must be planned again - not lost because its key was used by the skip."""
    b = story.customer()
    story.deliver()
    story.stripe_charges(b.invoice, decline_code="do_not_honor")
    story.run_due()  # turns off Stripe's automatic collection
    case = story.case(b.invoice)
    [retry] = [a for a in story.pending(case.id) if a.kind == "case.retry"]
    # Someone turned Stripe's retries back on: it will charge 30 minutes after ours is due.
    invoice = story.fake.store["invoice"][b.invoice]
    invoice["auto_advance"] = True
    invoice["next_payment_attempt"] = int(retry.due_at.timestamp()) + 1800
    assert story.advance_to_next_due(kind_prefix="case.retry")
    assert pay_requests(story, b.invoice) == [pay_requests(story, b.invoice)[0]]  # none by us
    assert story.case(b.invoice).our_attempts == 0
    story.clock.advance(timedelta(minutes=30))
    assert story.stripe_charges(b.invoice, decline_code="do_not_honor") == "declined"
    case = story.case(b.invoice)
    [again] = [a for a in story.pending(case.id) if a.kind == "case.retry"]
    assert again.dedupe_key == f"case:{case.id}:attempt:1" and again.payload["revival"] == 1
    invoice["auto_advance"], invoice["next_payment_attempt"] = False, None
    assert story.advance_to_next_due(kind_prefix="case.retry")
    assert pay_requests(story, b.invoice)[-1] == f"case:{case.id}:attempt:1:r1"
    assert story.case(b.invoice).our_attempts == 1


def test_expired_card_waits_for_a_new_card_then_retries_at_once(story: Story) -> None:
    b = story.customer()
    story.deliver()
    story.stripe_charges(b.invoice, decline_code="expired_card")
    case = story.case(b.invoice)
    assert (case.status, case.awaiting) == ("awaiting_customer", "new_card")
    assert [a.kind for a in story.pending(case.id) if a.kind == "case.retry"] == []

    story.clock.advance(timedelta(days=3))
    new_pm = story.fake.add_payment_method(b.customer, brand="visa", last4="1881")
    story.fake.add_event("payment_method.attached", new_pm)
    story.fake.update_customer_default_payment_method(
        b.customer, new_pm["id"], idempotency_key="customer-portal"
    )
    story.fake.set_subscription_default_payment_method(
        b.subscription, new_pm["id"], idempotency_key="customer-portal-sub"
    )
    story.fake.add_event("customer.updated", story.fake.retrieve_customer(b.customer))
    story.deliver()
    case = story.case(b.invoice)
    assert case.status == "retrying"
    assert case.next_retry_at == story.clock.now()
    assert "the card changed" in (case.next_step_reason or "")
    story.run_due()
    case = story.case(b.invoice)
    assert (case.status, case.recovered_via) == ("recovered", "our_retry")
    assert story.pending(case.id) == []


@pytest.mark.parametrize("decline_code", ["stolen_card", "lost_card", "fraudulent"])
def test_never_retry_codes_are_never_retried_on_that_card(story: Story, decline_code: str) -> None:
    b = story.customer()
    story.deliver()
    story.stripe_charges(b.invoice, decline_code=decline_code)
    case = story.case(b.invoice)
    assert (case.status, case.awaiting, case.decline_category) == (
        "awaiting_customer",
        "new_card",
        "never_retry",
    )
    while story.advance_to_next_due(kind_prefix="case."):
        pass
    assert pay_requests(story, b.invoice) == [pay_requests(story, b.invoice)[0]]  # Stripe's only


def test_authentication_required_waits_for_the_customer_with_the_hosted_link(
    story: Story,
) -> None:
    b = story.customer()
    story.deliver()
    story.stripe_charges(b.invoice, decline_code="generic_decline")
    story.run_due()
    story.fake.require_authentication(b.invoice)
    assert story.advance_to_next_due(kind_prefix="case.")
    case = story.case(b.invoice)
    assert (case.status, case.awaiting) == ("awaiting_customer", "authentication")
    assert case.hosted_invoice_url and case.hosted_invoice_url.startswith("https://")
    assert [a for a in story.pending(case.id) if a.kind == "case.retry"] == []


def test_a_retry_that_needs_3d_secure_is_not_charged_again_without_the_customer(
    story: Story,
) -> None:
    """Charging off-session again only asks for 3D Secure again: after our retry needed it,
    weeks of Stripe's events and daily jobs must not plan another charge on that card."""
    b = story.customer()
    story.deliver()
    story.stripe_charges(b.invoice, decline_code="generic_decline")
    story.run_due()
    story.fake.require_authentication(b.invoice, times=30)
    assert story.advance_to_next_due(kind_prefix="case.retry")
    for _ in range(20):  # reminders, daily jobs, whatever else comes due in the weeks after
        if not story.advance_to_next_due(limit=timedelta(days=10)):
            break
    case = story.case(b.invoice)
    assert case.our_attempts == 1
    assert (case.status, case.awaiting) in {
        ("awaiting_customer", "authentication"),
        ("lost", None),
    }
    assert len(pay_requests(story, b.invoice)) == 2  # Stripe's renewal charge and our one retry


def test_customer_paying_on_the_hosted_page_closes_the_case_at_once(story: Story) -> None:
    b = story.customer()
    story.deliver()
    story.stripe_charges(b.invoice, decline_code="insufficient_funds")
    case = story.case(b.invoice)
    assert story.pending(case.id)
    story.clock.advance(timedelta(hours=5))
    story.stripe_charges(b.invoice)  # the customer pays from Stripe's email
    case = story.case(b.invoice)
    assert (case.status, case.recovered_via) == ("recovered", "hosted_invoice_page")
    assert story.pending(case.id) == []
    with story.rt.db.transaction() as s:
        cancelled = s.scalars(
            select(DueAction.kind).where(DueAction.status == ActionStatus.CANCELLED)
        ).all()
        assert "case.retry" in cancelled


def test_voided_invoice_closes_the_case(story: Story) -> None:
    b = story.customer()
    story.deliver()
    story.stripe_charges(b.invoice, decline_code="generic_decline")
    invoice = story.fake.retrieve_invoice(b.invoice)
    story.fake.add_event("invoice.voided", {**invoice, "status": "void"})
    story.deliver()
    case = story.case(b.invoice)
    assert (case.status, case.close_reason) == ("closed", "voided")
    assert story.pending(case.id) == []


def test_weeks_of_dunning_end_in_lost_and_cancel_the_subscription_in_milliseconds(
    story: Story,
) -> None:
    b = story.customer(brand="visa", funding="credit")
    story.deliver()
    story.stripe_charges(b.invoice, decline_code="do_not_honor")
    story.fake.fail_next_payment(b.invoice, decline_code="do_not_honor", times=50)
    case = story.case(b.invoice)
    started = time.perf_counter()
    steps = 0
    while story.advance_to_next_due(kind_prefix="case.") and steps < 100:
        steps += 1
    elapsed = time.perf_counter() - started
    case = story.case(b.invoice)
    assert case.status == "lost"
    days = (story.clock.now() - case.opened_at).days
    assert 27 <= days <= 29  # the 28-day window
    attempts = pay_requests(story, b.invoice)
    assert 2 <= len(attempts) <= 8  # Stripe's first charge + ours, never past the cap
    assert len(set(attempts)) == len(attempts)  # one idempotency key per attempt
    cancels = [r for r in story.fake.requests if r.method == "cancel_subscription"]
    assert [r.idempotency_key for r in cancels] == [f"case:{case.id}:end_of_dunning"]
    print(f"{days} days of dunning, {len(attempts)} charges, {steps} worker steps: {elapsed:.3f} s")


def test_cases_api_lists_and_shows_the_timeline(client: Any, story: Story) -> None:
    b = story.customer()
    story.deliver()
    story.stripe_charges(b.invoice, decline_code="insufficient_funds")
    auth = {"Authorization": f"Bearer {API_KEY}"}
    listed = client.get("/api/v1/cases?status=retrying", headers=auth).json
    assert [c["invoice"] for c in listed["data"]] == [b.invoice]
    case_id = listed["data"][0]["id"]
    detail = client.get(f"/api/v1/cases/{case_id}", headers=auth).json
    assert detail["status"] == "retrying"
    assert detail["decline"]["code"] == "insufficient_funds"
    assert "payday" in detail["next_step"]["reason"]
    kinds = [e["kind"] for e in detail["timeline"]]
    assert kinds[0] == "opened" and "decision" in kinds
    assert detail["attempts"][0]["decline_code"] == "insufficient_funds"
    assert {a["kind"] for a in detail["scheduled"]} - {"outbox.send"} == {
        "case.retry",
        "case.auto_advance_off",
        "case.window_end",
    }
    assert client.get(f"/api/v1/cases?customer={b.customer}", headers=auth).json["data"]
    assert client.get("/api/v1/cases?customer=cus_nobody", headers=auth).json["data"] == []
    assert client.get("/api/v1/cases/999999", headers=auth).status_code == 404
    assert client.get("/api/v1/cases?status=nonsense", headers=auth).status_code == 400
    assert client.get("/api/v1/cases?since=yesterday", headers=auth).status_code == 400
