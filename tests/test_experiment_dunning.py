"""Dunning experiments acting on real cases, end to end against the Stripe fake (SQLite and
PostgreSQL): the holdout is left to Stripe alone, arms change retries and reminders, and every
customer keeps their first arm."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from recovery.adapters.clock import FrozenClock
from recovery.app import create_app
from recovery.models import (
    CaseEvent,
    ExperimentAssignment,
    ExperimentSubject,
    OutboxMessage,
)
from recovery.runtime import Runtime
from recovery.services.registry import build_runtime
from tests.conftest import API_KEY, make_settings
from tests.support.scenario import Story

# Shares of 0.999999: the customer's point falls in the holdout (or the first arm) for every
# id but one in a million; the fake's ids are fixed, so the test is deterministic.
HOLDOUT_ALL = """
[[experiments]]
key = "hands-off"
applies_to = "dunning"
holdout = 0.999999
[[experiments.arms]]
name = "ours"
"""

FIXED_EMAIL_ONLY = """
[[experiments]]
key = "fixed-days"
applies_to = "dunning"
holdout = 0
[[experiments.arms]]
name = "days_3_5_7"
retry = [3, 5, 7]
channels = ["email"]
first_reminder_delay_hours = 48
[[experiments.arms]]
name = "days_3_5_7_again"
retry = [3, 5, 7]
channels = ["email"]
first_reminder_delay_hours = 48
"""


def _story(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake: Any, rules: str
) -> Iterator[Story]:
    path = tmp_path / "rules.toml"
    path.write_text(rules)
    rt = build_runtime(
        make_settings(database_url, tmp_path, rules_path=path), clock=clock, gateway=fake
    )
    yield Story(rt, fake, clock)
    rt.db.dispose()


@pytest.fixture
def holdout_story(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any
) -> Iterator[Story]:
    yield from _story(database_url, tmp_path, clock, fake_gateway, HOLDOUT_ALL)


@pytest.fixture
def fixed_story(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any
) -> Iterator[Story]:
    yield from _story(database_url, tmp_path, clock, fake_gateway, FIXED_EMAIL_ONLY)


def _messages(rt: Runtime, case_id: int) -> list[OutboxMessage]:
    with rt.db.transaction() as s:
        return list(s.scalars(select(OutboxMessage).where(OutboxMessage.case_id == case_id)))


def _ours(story: Story) -> list[str]:
    """Every call this service made to Stripe that changes something."""
    changing = ("pay_invoice", "update_invoice", "cancel_subscription", "void_invoice")
    return [
        r.method
        for r in story.fake.requests
        if r.method in changing and not (r.idempotency_key or "").startswith("stripe:")
    ]


def test_a_holdout_case_gets_no_retry_no_reminder_and_no_stripe_change(
    holdout_story: Story,
) -> None:
    story = holdout_story
    b = story.customer()
    story.deliver()
    assert story.stripe_charges(b.invoice, decline_code="generic_decline") == "declined"
    case = story.case(b.invoice)
    assert case.status != "recovered" and case.next_retry_at is None
    assert (
        case.next_step_reason == "the holdout of experiment hands-off: Stripe's own retries alone"
    )
    assert [a.kind for a in story.pending(case.id)] == ["case.window_end"]
    # A whole retry window passes: nothing of ours reaches Stripe or the customer.
    while story.advance_to_next_due(limit=timedelta(days=40)):
        pass
    case = story.case(b.invoice)
    assert case.status == "lost" and case.our_attempts == 0
    assert _ours(story) == []
    assert _messages(story.rt, case.id) == []
    assert story.fake.store["invoice"][b.invoice]["status"] == "open"  # what Stripe alone did
    with story.rt.db.transaction() as s:
        [assigned] = s.scalars(select(ExperimentAssignment)).all()
        assert (assigned.experiment_key, assigned.arm, assigned.customer_id) == (
            "hands-off",
            "holdout",
            b.customer,
        )
        assert assigned.subject == f"case:{case.id}"
        [subject] = s.scalars(select(ExperimentSubject)).all()
        assert (subject.case_id, subject.arm) == (case.id, "holdout")
        kinds = [e.kind for e in s.scalars(select(CaseEvent).where(CaseEvent.case_id == case.id))]
        assert "experiment" in kinds and "reminders" not in kinds
    client = create_app(runtime=story.rt).test_client()
    body = client.get(f"/api/v1/cases/{case.id}", headers={"Authorization": f"Bearer {API_KEY}"})
    assert body.get_json()["experiment"] == {"key": "hands-off", "arm": "holdout"}
    timeline = [e["summary"] for e in body.get_json()["timeline"]]
    assert any("in the holdout: left to Stripe" in line for line in timeline)


def test_a_holdout_case_paid_by_stripes_own_retry_is_credited_to_stripe(
    holdout_story: Story,
) -> None:
    story = holdout_story
    b = story.customer()
    story.deliver()
    story.stripe_charges(b.invoice, decline_code="generic_decline")
    # Stripe planned its next attempt in three days (its own Smart Retries) and makes it.
    retry_at = story.clock.now() + timedelta(days=3)
    invoice = story.fake.store["invoice"][b.invoice]
    invoice["next_payment_attempt"] = int(retry_at.timestamp())
    story.fake.add_event("invoice.updated", dict(invoice))
    story.deliver()
    story.clock.set(retry_at)
    assert story.stripe_charges(b.invoice) == "paid"
    case = story.case(b.invoice)
    assert (case.status, case.recovered_via, case.our_attempts) == ("recovered", "stripe_retry", 0)
    assert _messages(story.rt, case.id) == []  # no thank-you either: the holdout hears nothing


def test_a_customer_keeps_their_first_arm_for_a_second_case(holdout_story: Story) -> None:
    story = holdout_story
    b = story.customer()
    story.deliver()
    story.stripe_charges(b.invoice, decline_code="generic_decline")
    second = story.fake.add_invoice(b.customer, subscription_id=b.subscription)
    story.stripe_charges(second["id"], decline_code="generic_decline")
    with story.rt.db.transaction() as s:
        assert len(s.scalars(select(ExperimentAssignment)).all()) == 1
        arms = [r.arm for r in s.scalars(select(ExperimentSubject))]
    assert arms == ["holdout", "holdout"]


def test_a_fixed_schedule_arm_charges_on_its_days_and_writes_email_only_after_its_delay(
    fixed_story: Story,
) -> None:
    story = fixed_story
    b = story.customer()
    story.deliver()
    opened = story.clock.now()
    story.stripe_charges(b.invoice, decline_code="generic_decline")
    case = story.case(b.invoice)
    assert case.next_retry_at == opened + timedelta(days=3)
    assert "day 3 of the fixed schedule" in (case.next_step_reason or "")
    messages = _messages(story.rt, case.id)
    assert messages and {m.channel for m in messages} == {"email"}
    assert min(m.send_after for m in messages) >= opened + timedelta(hours=48)
    story.run_due()  # auto_advance off: an arm that is not the holdout acts as the service does
    assert "update_invoice" in _ours(story)
    story.fake.fail_next_payment(b.invoice, decline_code="generic_decline")
    assert story.advance_to_next_due(kind_prefix="case.retry")
    case = story.case(b.invoice)
    assert case.our_attempts == 1
    assert case.next_retry_at == opened + timedelta(days=5)


def test_a_never_retry_decline_is_not_retried_on_a_fixed_schedule(fixed_story: Story) -> None:
    story = fixed_story
    b = story.customer()
    story.deliver()
    story.stripe_charges(b.invoice, decline_code="stolen_card")
    case = story.case(b.invoice)
    assert case.next_retry_at is None
    assert [a for a in story.pending(case.id) if a.kind == "case.retry"] == []


THOMPSON = """
[[experiments]]
key = "routed"
applies_to = "dunning"
holdout = 0.1
routing = "thompson"
min_share = 0.1
[[experiments.arms]]
name = "ours"
[[experiments.arms]]
name = "email_only"
channels = ["email"]
"""


@pytest.fixture
def thompson_story(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any
) -> Iterator[Story]:
    yield from _story(database_url, tmp_path, clock, fake_gateway, THOMPSON)


def test_thompson_routing_moves_share_to_the_arm_that_recovers_and_logs_why(
    thompson_story: Story, caplog: pytest.LogCaptureFixture
) -> None:
    from recovery.models import ExperimentRouting, RecoveryCase
    from recovery.services.experiments import assignment, routing

    story = thompson_story
    rt = story.rt
    experiment = rt.rules.experiments.active("dunning")
    assert experiment is not None
    opened = story.clock.now()
    # Finished cases: "ours" recovered 30 of 40, "email_only" 5 of 40; one still open is
    # left out (its window is not over).
    with rt.db.transaction() as s:
        for i in range(81):
            arm = "ours" if i < 40 else "email_only"
            won = (i < 30) or (40 <= i < 45)
            case = RecoveryCase(
                invoice_id=f"in_{i}",
                customer_id=f"cus_{i}",
                status="recovered" if won else "lost",
                currency="usd",
                amount_due=1000,
                opened_at=opened - timedelta(days=40 if i < 80 else 1),
            )
            s.add(case)
            s.flush()
            s.add(
                ExperimentSubject(
                    experiment_key="routed",
                    arm=arm,
                    customer_id=f"cus_{i}",
                    case_id=case.id,
                    assigned_at=opened,
                )
            )
    with caplog.at_level("INFO"), rt.db.transaction() as s:
        routing.daily_job(rt, s)
    with rt.db.transaction() as s:
        [row] = s.scalars(select(ExperimentRouting)).all()
        posteriors = {p["arm"]: p for p in row.posteriors["posteriors"]}
        assert (posteriors["ours"]["recovered"], posteriors["ours"]["not_recovered"]) == (30, 10)
        assert (
            posteriors["email_only"]["recovered"],
            posteriors["email_only"]["not_recovered"],
        ) == (
            5,
            35,
        )
        assert row.shares["holdout"] == 0.1
        assert row.shares["ours"] > 0.75 and row.shares["email_only"] >= 0.1
        shares = assignment.shares_now(s, experiment)
        assert shares["ours"] == row.shares["ours"] and shares.holdout == 0.1
    assert any("experiment shares reassigned" in r.getMessage() for r in caplog.records)
