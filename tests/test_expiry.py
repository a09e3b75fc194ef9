"""The expiry tracker: a daily scan plans the expiring-card sequence; a new card cancels it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from recovery.adapters.clock import FrozenClock
from recovery.runtime import Runtime
from recovery.services import expiry
from tests.support.messaging import messages
from tests.support.scenario import Story


@pytest.fixture
def story(runtime: Runtime, fake_gateway: Any, clock: FrozenClock) -> Story:
    return Story(runtime, fake_gateway, clock)


def _subscriber_with_expiring_card(story: Story) -> tuple[str, str, str]:
    fake = story.fake
    cus = fake.add_customer(email="kim@example.com", name="Kim", country="DE")
    pm = fake.add_payment_method(cus["id"], exp_month=11, exp_year=2026, last4="1111")
    fake.update_customer_default_payment_method(cus["id"], pm["id"], idempotency_key="seed")
    price = fake.add_price(unit_amount=1500)
    sub = fake.add_subscription(cus["id"], price_id=price["id"], default_payment_method=pm["id"])
    for event_type, obj in (
        ("customer.created", fake.retrieve_customer(cus["id"])),
        ("payment_method.attached", pm),
        ("customer.subscription.created", sub),
    ):
        fake.add_event(event_type, obj)
    story.deliver()
    return cus["id"], pm["id"], sub["id"]


def test_daily_scan_plans_the_expiring_sequence_once(story: Story) -> None:
    _, pm, sub = _subscriber_with_expiring_card(story)
    assert expiry.JOB_NAME in story.worker.run_daily_jobs()
    assert story.worker.run_daily_jobs() == []  # once per day, cluster-wide
    rows = messages(story.rt, about=f"expiry:{sub}:{pm}")
    assert [(m.channel, m.template) for m in rows] == [
        ("email", "card_expiring"),
        ("email", "card_expiring"),
    ]  # no phone: the SMS step is skipped
    assert "Visa card ending in 1111" in rows[0].body and "$15.00" in rows[0].body
    story.worker.run_until_idle()
    assert messages(story.rt, about=f"expiry:{sub}:{pm}")[0].status == "sent"
    # Tomorrow's scan plans nothing new.
    story.clock.advance(timedelta(days=1))
    story.worker.run_daily_jobs()
    assert len(messages(story.rt, about=f"expiry:{sub}:{pm}")) == 2


def test_a_new_card_cancels_the_pending_notices(story: Story) -> None:
    cus, pm, sub = _subscriber_with_expiring_card(story)
    story.worker.run_daily_jobs()
    story.worker.run_until_idle()
    story.clock.advance(timedelta(days=2))
    new = story.fake.add_payment_method(cus, brand="visa", last4="2222")
    story.fake.add_event("payment_method.attached", new)
    story.fake.set_subscription_default_payment_method(sub, new["id"], idempotency_key="portal")
    story.fake.add_event("customer.subscription.updated", story.fake.retrieve_subscription(sub))
    story.deliver()
    statuses = [m.status for m in messages(story.rt, about=f"expiry:{sub}:{pm}")]
    assert statuses == ["sent", "cancelled"]
