"""Reminder sequences: the pure planner, and cases planning / cancelling their reminders as
they open, change category and close (Story against the Stripe fake, SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from recovery.adapters.clock import FrozenClock
from recovery.domain.reminders import ReminderRules, ReminderStep, plan, sequence_for
from recovery.models import ActionStatus, DueAction
from recovery.rules import Rules
from recovery.runtime import Runtime
from tests.support.messaging import messages, with_phone
from tests.support.scenario import Story

RULES = ReminderRules.from_mapping(Rules.load(None).data["reminders"])


@pytest.fixture
def story(runtime: Runtime, fake_gateway: Any, clock: FrozenClock) -> Story:
    return Story(runtime, fake_gateway, clock)


# ---- the pure planner ----------------------------------------------------------------------


def test_soft_sequence_days_in_the_customers_zone() -> None:
    start = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # 10:00 in Berlin
    planned = plan(
        RULES.sequences["soft"],
        started_at=start,
        deadline=start + timedelta(days=28),
        zone="Europe/Berlin",
        send_hour=10,
    )
    assert [(p.channel, p.template, p.at) for p in planned] == [
        ("email", "soft_decline", start),
        ("sms", "soft_decline", datetime(2026, 11, 5, 9, 0, tzinfo=UTC)),
        ("email", "soft_decline", datetime(2026, 11, 9, 9, 0, tzinfo=UTC)),
        ("email", "final_notice", datetime(2026, 11, 28, 9, 0, tzinfo=UTC)),
    ]


def test_steps_past_the_deadline_or_before_the_start_are_dropped() -> None:
    start = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    steps = (
        ReminderStep("email", "card_expiring", days_before_end=30),
        ReminderStep("email", "card_expiring", days_before_end=14),
        ReminderStep("sms", "card_expiring", days_before_end=3),
    )
    planned = plan(
        steps, started_at=start, deadline=start + timedelta(days=20), zone="UTC", send_hour=10
    )
    assert [p.index for p in planned] == [1, 2]


def test_sequence_follows_what_the_case_waits_for() -> None:
    assert sequence_for("authentication", "needs_customer") == "authentication"
    assert sequence_for("new_card", "needs_new_card") == "new_card"
    assert sequence_for(None, "never_retry") == "new_card"
    assert sequence_for(None, "soft") == "soft"


def test_bad_rules_name_the_key() -> None:
    with pytest.raises(ValueError, match=r"sequences.soft\[0\].channel"):
        ReminderRules.from_mapping({"sequences": {"soft": [{"channel": "fax", "day": 0}]}})
    with pytest.raises(ValueError, match="exactly one of day"):
        ReminderRules.from_mapping(
            {"sequences": {"soft": [{"channel": "email", "template": "soft_decline"}]}}
        )


# ---- cases plan and cancel their reminders ------------------------------------------------


def test_a_soft_decline_plans_the_soft_sequence_and_sends_day_0(story: Story) -> None:
    b = story.customer(country="DE")
    with_phone(story, b)
    story.deliver()
    story.stripe_charges(b.invoice, decline_code="generic_decline")
    case = story.case(b.invoice)
    planned = messages(story.rt, case_id=case.id)
    assert [(m.channel, m.template, m.step) for m in planned] == [
        ("email", "soft_decline", "soft.0"),
        ("sms", "soft_decline", "soft.1"),
        ("email", "soft_decline", "soft.2"),
        ("email", "final_notice", "soft.3"),
    ]
    assert planned[0].recipient == "kim@example.com"
    assert planned[1].recipient == "+4915112345678"
    assert "http://recovery.test/update/" in planned[0].body
    # No SMTP configured: the day-0 email goes to the local outbox (and the log).
    story.worker.run_until_idle()
    first = messages(story.rt, case_id=case.id)[0]
    assert (first.status, first.provider_id) == ("sent", "local-outbox")


def test_recovery_cancels_pending_reminders_and_says_thank_you(story: Story) -> None:
    b = story.customer()
    story.deliver()
    story.stripe_charges(b.invoice, decline_code="generic_decline")
    for _ in range(5):  # auto-advance off + day-0 email, then our retry about a day later
        assert story.advance_to_next_due()
        if story.case(b.invoice).status == "recovered":
            break
    case = story.case(b.invoice)
    assert case.status == "recovered"
    rows = messages(story.rt, case_id=case.id)
    by_step = {m.step: m.status for m in rows}
    assert by_step["soft.0"] == "sent"
    assert by_step["soft.2"] == by_step["soft.3"] == "cancelled"
    [thanks] = [m for m in rows if m.template == "recovered"]
    assert thanks.step == "confirmation" and "went through" in thanks.subject
    story.worker.run_until_idle()
    assert messages(story.rt, template="recovered")[0].status == "sent"
    with story.rt.db.transaction() as s:
        pending = s.query(DueAction).filter_by(status=ActionStatus.PENDING).all()
        assert [a for a in pending if a.subject == f"case:{case.id}"] == []


def test_a_new_card_decline_switches_to_the_new_card_sequence(story: Story) -> None:
    b = story.customer()
    story.deliver()
    story.stripe_charges(b.invoice, decline_code="expired_card")
    case = story.case(b.invoice)
    rows = messages(story.rt, case_id=case.id)
    assert rows[0].template == "card_replace" and rows[0].send_after == story.clock.now()
    assert "Visa card ending in 4242" in rows[0].body


def test_at_most_one_reminder_per_customer_per_day(story: Story) -> None:
    b = story.customer()
    story.deliver()
    second = story.fake.add_invoice(b.customer, subscription_id=b.subscription)
    story.stripe_charges(b.invoice, decline_code="generic_decline")
    story.stripe_charges(second["id"], decline_code="generic_decline")
    first_case, second_case = story.case(b.invoice), story.case(second["id"])
    a = messages(story.rt, case_id=first_case.id)[0]
    c = messages(story.rt, case_id=second_case.id)[0]
    assert a.send_after == story.clock.now()
    assert c.send_after.date() == (story.clock.now() + timedelta(days=1)).date()
    assert a.cap_day != c.cap_day


def test_subscription_ended_after_failed_payments(story: Story) -> None:
    b = story.customer()
    story.deliver()
    story.stripe_charges(b.invoice, decline_code="generic_decline")
    story.clock.advance(timedelta(hours=1))
    sub = story.fake.retrieve_subscription(b.subscription)
    ended = {
        **sub,
        "status": "canceled",
        "cancellation_details": {"reason": "payment_failed", "comment": None, "feedback": None},
    }
    story.fake.add_event("customer.subscription.deleted", ended)
    story.deliver()
    case = story.case(b.invoice)
    assert case.status == "lost"
    rows = messages(story.rt, case_id=case.id)
    assert {m.status for m in rows if m.step.startswith("soft.")} <= {"cancelled", "sent"}
    [notice] = [m for m in rows if m.template == "subscription_ended"]
    assert notice.status == "pending" and "has ended" in notice.subject


def test_the_api_lists_a_cases_messages(story: Story, client: Any) -> None:
    from tests.conftest import API_KEY

    b = story.customer()
    story.deliver()
    story.stripe_charges(b.invoice, decline_code="generic_decline")
    case = story.case(b.invoice)
    body = client.get(
        f"/api/v1/cases/{case.id}", headers={"Authorization": f"Bearer {API_KEY}"}
    ).get_json()
    assert [m["template"] for m in body["messages"]][:1] == ["soft_decline"]
    assert body["messages"][0]["to"] == "k***@example.com"
    health = client.get("/healthz").get_json()
    assert "local outbox" in health["messages"]["email"]
