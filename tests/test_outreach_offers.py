"""Annual-term offers end to end on the Stripe fake, mail into aiosmtpd: the daily job, the email
from the named sender, the page's prices and Stripe's preview, one click switching - once,
whatever the clicks and tabs - and "no thanks"."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from recovery.adapters.clock import FrozenClock
from recovery.models import OutboxMessage, Subscription, TermOffer
from recovery.services.operations import jobs
from recovery.services.reporting import metrics
from tests.support.outreach import Outreach, body, outreach_story, token_in


@pytest.fixture
def story(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any
) -> Iterator[Outreach]:
    with outreach_story(database_url, tmp_path, clock, fake_gateway) as made:
        yield made


def _switches(story: Outreach) -> list[Any]:
    return [r for r in story.fake.requests if r.method == "switch_subscription_price"]


def test_an_offer_goes_from_email_to_a_yearly_subscription_with_one_charge(
    story: Outreach,
) -> None:
    kim = story.subscriber(age_days=40, period_days_left=20)
    story.run_job("term_offers")

    [mail] = story.mails_to("kim@example.com")
    assert str(mail["From"]) == "Dana at Acme <billing@acme.example>"
    assert mail["Subject"] == "Switch Acme to yearly billing?"
    assert "Hi Kim," in body(mail)
    # marketing mail: one-click unsubscribe (RFC 8058)
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "/unsubscribe/" in mail["List-Unsubscribe"]
    token = token_in(mail, "annual")

    page = story.client.get(f"/annual/{token}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "$20.00 a month" in html  # what Kim pays now
    assert "$200.00 a year" in html  # the yearly price
    assert "$40.00 a year" in html  # 12 x 20 - 200 saved
    # Stripe's preview: the year less the 20 unused days of the month paid (2000 x 20/30)
    assert "$186.67 will be charged today" in html
    assert page.headers["Cache-Control"] == "no-store"

    csrf = story.csrf(f"/annual/{token}")
    stamp = int(story.clock.now().timestamp())
    story.clock.set(story.clock.now() + timedelta(minutes=2))  # Kim reads, then clicks
    form = {"csrf_token": csrf, "proration_date": str(stamp)}
    first = story.client.post(f"/annual/{token}", data=form)
    second = story.client.post(f"/annual/{token}", data=form)  # a double click
    other_tab = story.client.get(f"/annual/{token}")
    for answer in (first, second, other_tab):
        assert answer.status_code == 200
        assert "You're on yearly billing" in answer.get_data(as_text=True)
    assert "$186.67 was charged" in first.get_data(as_text=True)

    # one request to Stripe for the switch (the second click is answered from our row)
    assert len(_switches(story)) == 1
    sub = story.fake.store["subscription"][kim.subscription]
    assert sub["items"]["data"][0]["price"]["id"] == "price_yearly"
    charged = [
        i
        for i in story.fake.store["invoice"].values()
        if i.get("billing_reason") == "subscription_update"
    ]
    assert [i["amount_paid"] for i in charged] == [18667]

    story.deliver()
    with story.rt.db.transaction() as s:
        mirrored = s.get(Subscription, kim.subscription)
        assert mirrored is not None and mirrored.items[0].price_id == "price_yearly"
        offer = s.scalars(select(TermOffer)).one()
        assert (offer.status, offer.charged_amount, offer.annual_amount) == (
            "accepted",
            18667,
            20000,
        )

    figures = metrics.overview(
        story.rt,
        story.clock.now().replace(day=1),
        story.clock.now().replace(day=28),
        "usd",
        story.clock.now(),
    ).outreach
    assert (figures.offers_sent, figures.offers_accepted, figures.revenue_moved_to_annual) == (
        1,
        1,
        20000,
    )


def test_two_tabs_accepting_at_once_make_one_change(story: Outreach) -> None:
    """Tab 1's click fixed the request and reached Stripe, but its answer was not recorded yet
    (slow, or its process died) when tab 2's click came: tab 2 sends the very same request
    (same key, same proration date), which Stripe answers from its first result."""
    kim = story.subscriber()
    story.run_job("term_offers")
    token = token_in(story.mails_to("kim@example.com")[0], "annual")
    csrf = story.csrf(f"/annual/{token}")
    with story.rt.db.transaction() as s:  # tab 1: decided...
        offer = s.scalars(select(TermOffer)).one()
        offer.status, offer.charge_at = "accepting", story.clock.now()
        request = {
            "item_id": offer.item_id,
            "price_id": offer.annual_price,
            "quantity": offer.quantity,
            "proration_behavior": "always_invoice",
            "proration_date": int(story.clock.now().timestamp()),
            "idempotency_key": f"term-offer:{offer.id}:switch",
        }
    story.fake.switch_subscription_price(kim.subscription, **request)  # ...and Stripe did it
    answer = story.client.post(f"/annual/{token}", data={"csrf_token": csrf})  # tab 2
    assert "You're on yearly billing" in answer.get_data(as_text=True)
    assert len(_switches(story)) == 2
    assert {r.idempotency_key for r in _switches(story)} == {request["idempotency_key"]}
    charged = [
        i
        for i in story.fake.store["invoice"].values()
        if i.get("billing_reason") == "subscription_update"
    ]
    assert len(charged) == 1  # replayed, not repeated
    item = story.fake.store["subscription"][kim.subscription]["items"]["data"][0]
    assert item["price"]["id"] == "price_yearly"


def test_no_thanks_closes_the_offer_and_no_other_comes(story: Outreach) -> None:
    story.subscriber()
    story.run_job("term_offers")
    token = token_in(story.mails_to("kim@example.com")[0], "annual")
    csrf = story.csrf(f"/annual/{token}")
    answer = story.client.post(f"/annual/{token}/decline", data={"csrf_token": csrf})
    assert "we won't offer this again" in answer.get_data(as_text=True)
    refused = story.client.post(f"/annual/{token}", data={"csrf_token": csrf})
    assert "You're on yearly billing" not in refused.get_data(as_text=True)
    assert not _switches(story)
    # a second monthly subscription of the same customer is not offered either
    with story.rt.db.transaction() as s:
        customer = s.scalars(select(TermOffer.customer_id)).one()
    second = story.fake.add_subscription(
        customer, price_id="price_monthly", created=int(story.clock.now().timestamp())
    )
    story.fake.add_event("customer.subscription.created", second)
    story.deliver()
    story.run_job("term_offers")
    assert len(story.mails_to("kim@example.com")) == 1


def test_who_is_not_offered(story: Outreach) -> None:
    story.subscriber(email="young@example.com", age_days=10)  # month 1: offered
    story.subscriber(email="old@example.com", age_days=200)  # month 7: outside 1-4
    story.subscriber(email="yearly@example.com", price="price_yearly")  # not monthly
    leaving = story.subscriber(email="leaving@example.com")
    story.fake.cancel_subscription(
        leaving.subscription, at_period_end=True, idempotency_key="leaving"
    )
    unpaid = story.subscriber(email="unpaid@example.com")
    story.fake.add_invoice(unpaid.customer, subscription_id=unpaid.subscription)
    story.fake.add_event(
        "invoice.finalized",
        next(i for i in story.fake.store["invoice"].values() if i["customer"] == unpaid.customer),
    )
    story.deliver()
    story.run_job("term_offers")
    story.run_job("term_offers")  # again the same day: nothing twice
    with story.rt.db.transaction() as s:
        sent = sorted(m.recipient for m in s.scalars(select(OutboxMessage)))
    assert sent == ["young@example.com"]


def test_next_renewal_switches_through_a_schedule_and_charges_nothing_today(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any
) -> None:
    with outreach_story(
        database_url, tmp_path, clock, fake_gateway, proration="next_renewal"
    ) as story:
        kim = story.subscriber(age_days=40, period_days_left=20)
        story.run_job("term_offers")
        token = token_in(story.mails_to("kim@example.com")[0], "annual")
        html = story.client.get(f"/annual/{token}").get_data(as_text=True)
        assert "Nothing is charged today" in html
        assert "on November 22, 2026, $200.00 will be charged" in html
        csrf = story.csrf(f"/annual/{token}")
        for _click in range(2):
            done = story.client.post(f"/annual/{token}", data={"csrf_token": csrf})
            assert "Yearly billing starts on November 22, 2026" in done.get_data(as_text=True)
        schedules = list(story.fake.store["subscription_schedule"].values())
        assert len(schedules) == 1
        sub = story.fake.store["subscription"][kim.subscription]
        assert sub["items"]["data"][0]["price"]["id"] == "price_monthly"  # until the renewal
        assert not [i for i in story.fake.store["invoice"].values()]  # nothing charged
        story.fake.start_scheduled_phase(schedules[0]["id"])
        story.deliver()
        with story.rt.db.transaction() as s:
            mirrored = s.get(Subscription, kim.subscription)
            assert mirrored is not None and mirrored.items[0].price_id == "price_yearly"


def test_jobs_list_names_each_daily_job_with_its_last_run(story: Outreach) -> None:
    before = {status.name: status for status in jobs.listing(story.rt)}
    assert {"expiry_scan", "term_offers", "win_back"} <= set(before)
    assert before["term_offers"].started_at is None
    story.run_job("term_offers")
    after = {status.name: status for status in jobs.listing(story.rt)}
    assert after["term_offers"].started_at == story.clock.now()
    assert after["term_offers"].period is not None
    assert after["term_offers"].period.startswith("manual:")
    with pytest.raises(jobs.UnknownJob):
        jobs.run_now(story.rt, "no_such_job")
