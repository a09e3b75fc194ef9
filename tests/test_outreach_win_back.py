"""Win-back end to end on the Stripe fake (Checkout in subscription mode, which localstripe lacks),
mail into aiosmtpd; one-click unsubscribe (RFC 8058) honoured for every later win-back and
annual offer but never for a failed-payment reminder."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from recovery.adapters.clock import FrozenClock
from recovery.models import MarketingOptOut, MessageStatus, OutboxMessage, WinBack
from recovery.services.reporting import metrics
from tests.support.outreach import Outreach, body, outreach_story, token_in

CONSENT = {"marketing_consent": "2026-01-15"}


@pytest.fixture
def story(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any
) -> Iterator[Outreach]:
    with outreach_story(database_url, tmp_path, clock, fake_gateway, coupon="welcome20") as made:
        yield made


def _end(story: Outreach, subscription: str) -> None:
    story.fake.cancel_subscription(subscription, at_period_end=False, idempotency_key="end")
    story.deliver()


def test_a_note_brings_the_customer_back_through_checkout_and_the_sequence_stops(
    story: Outreach,
) -> None:
    kim = story.subscriber(metadata=CONSENT)
    _end(story, kim.subscription)
    story.later(13)
    assert story.mails_to("kim@example.com") == []  # nothing before day 14
    story.later(2)
    [note] = story.mails_to("kim@example.com")
    assert note["Subject"] == "Come back to Acme?"
    assert str(note["From"]) == "Dana at Acme <billing@acme.example>"
    assert "A welcome-back discount is waiting for you there." in body(note)
    assert note["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    token = token_in(note, "come-back")

    page = story.client.get(f"/come-back/{token}").get_data(as_text=True)
    assert "Restart your Acme subscription on the same plan: $20.00 a month." in page
    assert "Your welcome-back discount is applied at checkout." in page
    csrf = story.csrf(f"/come-back/{token}")
    first = story.client.post(f"/come-back/{token}", data={"csrf_token": csrf})
    again = story.client.post(f"/come-back/{token}", data={"csrf_token": csrf})  # double click
    assert first.status_code == again.status_code == 303
    assert first.headers["Location"] == again.headers["Location"]  # one Checkout Session
    [session] = story.fake.store["checkout.session"].values()
    assert session["mode"] == "subscription"
    assert session["line_items"] == [{"price": "price_monthly", "quantity": 1}]
    assert session["discounts"] == [{"coupon": "welcome20"}]

    story.fake.complete_subscription_checkout(session["id"])  # Kim pays on Checkout
    story.deliver()
    done = story.client.get(f"/come-back/{token}/done?session_id={session['id']}")
    assert "You're subscribed again" in done.get_data(as_text=True)
    with story.rt.db.transaction() as s:
        win_back = s.scalars(select(WinBack)).one()
        assert (win_back.status, win_back.reactivated_amount) == ("reactivated", 2000)
        assert win_back.ended_by == "business"
    story.later(50)  # day 60 passes: the second note never goes
    assert len(story.mails_to("kim@example.com")) == 1
    figures = metrics.overview(
        story.rt,
        datetime(2026, 11, 1, tzinfo=UTC),
        story.clock.now(),
        "usd",
        story.clock.now(),
    ).outreach
    assert (figures.win_backs_sent, figures.reactivated, figures.reactivated_revenue) == (
        1,
        1,
        2000,
    )


def test_no_consent_no_win_back(story: Outreach) -> None:
    kim = story.subscriber(metadata={})
    _end(story, kim.subscription)
    story.run_job("win_back")
    story.later(61)
    assert story.mails_to("kim@example.com") == []


def test_subscribing_again_on_their_own_stops_the_sequence_at_once(story: Outreach) -> None:
    kim = story.subscriber(metadata=CONSENT)
    _end(story, kim.subscription)
    story.later(15)
    assert len(story.mails_to("kim@example.com")) == 1
    again = story.fake.add_subscription(kim.customer, price_id="price_monthly")
    story.fake.add_event("customer.subscription.created", again)
    story.deliver()
    with story.rt.db.transaction() as s:
        pending = s.scalars(
            select(OutboxMessage).where(OutboxMessage.status == MessageStatus.PENDING)
        ).all()
        assert pending == []
        assert s.scalars(select(WinBack.status)).one() == "stopped"
    story.later(50)
    assert len(story.mails_to("kim@example.com")) == 1


def test_an_end_and_a_new_subscription_in_one_batch_stop_the_win_back(story: Outreach) -> None:
    """The win-back reaction runs only for a customer with a win-back (a renewal's update
    skips it); one planned by an earlier event of the same batch counts."""
    kim = story.subscriber(metadata=CONSENT)
    story.fake.cancel_subscription(kim.subscription, at_period_end=False, idempotency_key="end")
    again = story.fake.add_subscription(kim.customer, price_id="price_monthly")
    story.fake.add_event("customer.subscription.created", again)
    story.deliver()  # the end (plans a win-back) and the new subscription: one batch
    with story.rt.db.transaction() as s:
        assert s.scalars(select(WinBack.status)).one() == "stopped"
    story.later(61)
    assert story.mails_to("kim@example.com") == []


def test_the_daily_job_plans_what_an_event_missed(story: Outreach) -> None:
    kim = story.subscriber(metadata=CONSENT)
    story.fake.cancel_subscription(kim.subscription, at_period_end=False, idempotency_key="x")
    sub = story.fake.retrieve_subscription(kim.subscription)  # the mirror learns it by a sync
    story.fake.events.clear()
    story._delivered = 0
    story.fake.add_event("customer.subscription.updated", sub)
    story.deliver()
    story.run_job("win_back")
    story.later(15)
    assert len(story.mails_to("kim@example.com")) == 1


def test_one_click_unsubscribe_stops_marketing_but_never_a_payment_reminder(
    story: Outreach,
) -> None:
    kim = story.subscriber(metadata=CONSENT)
    _end(story, kim.subscription)
    story.later(15)
    [note] = story.mails_to("kim@example.com")
    url = note["List-Unsubscribe"].strip("<>")
    assert url.startswith("http://recovery.test/unsubscribe/")
    # a link scanner's GET unsubscribes nobody
    token = url.rsplit("/", 1)[1]
    assert "Stop offers" in story.client.get(f"/unsubscribe/{token}").get_data(as_text=True)
    # the mail client's one-click POST: no cookie, no CSRF token
    fresh = story.app.test_client()
    answer = fresh.post(
        url.removeprefix("http://recovery.test"), data={"List-Unsubscribe": "One-Click"}
    )
    assert answer.status_code == 200
    assert "You're unsubscribed" in answer.get_data(as_text=True)
    assert fresh.post(url.removeprefix("http://recovery.test")).status_code == 200  # again: ok
    with story.rt.db.transaction() as s:
        assert s.scalars(select(MarketingOptOut.via)).all() == ["one_click"]

    story.later(50)  # the day-60 note is not sent
    assert len(story.mails_to("kim@example.com")) == 1
    with story.rt.db.transaction() as s:
        stopped = s.scalars(
            select(OutboxMessage).where(OutboxMessage.status == MessageStatus.CANCELLED)
        ).one()
        assert stopped.last_error == "the recipient unsubscribed from these emails"

    # Kim subscribes again: no annual offer either...
    again = story.fake.add_subscription(
        kim.customer,
        price_id="price_monthly",
        default_payment_method=kim.payment_method,
        created=int(story.clock.now().timestamp()) - 10 * 86400,
    )
    story.fake.add_event("customer.subscription.created", again)
    story.deliver()
    story.run_job("term_offers")
    assert len(story.mails_to("kim@example.com")) == 1
    # ...but a failed payment is still reminded: a debt is not marketing
    invoice = story.fake.add_invoice(kim.customer, subscription_id=again["id"])
    assert story.stripe_charges(invoice["id"], decline_code="insufficient_funds") == "declined"
    story.run_due()
    mails = story.mails_to("kim@example.com")
    assert len(mails) == 2
    assert "List-Unsubscribe" not in mails[-1]
    assert "/update/" in body(mails[-1])
