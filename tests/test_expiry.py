"""The expiry tracker: a daily scan plans the expiring-card sequence; a new card cancels it; each
notice carries a login-free link that changes the card (SQLite and PostgreSQL, aiosmtpd)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from recovery.adapters.clock import FrozenClock
from recovery.app import create_app
from recovery.models import CardUpdateLink, Subscription
from recovery.runtime import Runtime
from recovery.services.card_update import links
from recovery.services.messaging import expiry
from tests.support.card_update import csrf_from
from tests.support.messaging import messages, messaging_runtime
from tests.support.scenario import Story
from tests.support.smtp_sink import SmtpSink, smtp_sink


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


def test_the_scan_follows_the_card_stripe_charges_at_renewal(story: Story) -> None:
    """The subscription's own default card comes before its customer's: the customer's expiring
    default is noticed only for a subscription without a card of its own."""
    fake = story.fake
    price = fake.add_price(unit_amount=1500)
    subs: dict[str, tuple[str, str]] = {}
    for name, own_card in (("kim", False), ("lee", True)):
        cus = fake.add_customer(email=f"{name}@example.com", name=name.title(), country="DE")
        old = fake.add_payment_method(cus["id"], exp_month=11, exp_year=2026, last4="1111")
        new = fake.add_payment_method(cus["id"], exp_month=5, exp_year=2029, last4="2222")
        fake.update_customer_default_payment_method(cus["id"], old["id"], idempotency_key=name)
        sub = fake.add_subscription(
            cus["id"], price_id=price["id"], default_payment_method=new["id"] if own_card else None
        )
        fake.add_event("customer.created", fake.retrieve_customer(cus["id"]))
        for pm in (old, new):
            fake.add_event("payment_method.attached", pm)
        fake.add_event("customer.subscription.created", sub)
        subs[name] = (sub["id"], old["id"])
    story.deliver()
    story.worker.run_daily_jobs()
    kim_sub, kim_card = subs["kim"]
    assert len(messages(story.rt, about=f"expiry:{kim_sub}:{kim_card}")) == 2
    lee_sub, _ = subs["lee"]
    assert [m.about for m in messages(story.rt) if m.about.startswith(f"expiry:{lee_sub}:")] == []


def test_an_empty_card_id_on_the_subscription_names_no_card(story: Story) -> None:
    """A subscription whose default card id is '' in the mirror renews on its customer's
    default card, as `default_card` reads it: that card's expiry is noticed."""
    _, pm, sub = _subscriber_with_expiring_card(story)
    with story.rt.db.transaction() as session:
        session.execute(
            update(Subscription).where(Subscription.id == sub).values(default_payment_method_id="")
        )
    story.worker.run_daily_jobs()
    assert len(messages(story.rt, about=f"expiry:{sub}:{pm}")) >= 1


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


def test_the_card_updater_renewing_the_card_cancels_the_pending_notices(story: Story) -> None:
    _, pm, sub = _subscriber_with_expiring_card(story)
    story.worker.run_daily_jobs()
    story.worker.run_until_idle()
    story.clock.advance(timedelta(days=2))
    # The network's card updater gave the same card a new expiry date.
    renewed = story.fake.retrieve_payment_method(pm)
    renewed = {**renewed, "card": {**renewed["card"], "exp_year": 2030}}
    story.fake.put(renewed)
    story.fake.add_event("payment_method.automatically_updated", renewed)
    story.deliver()
    statuses = [m.status for m in messages(story.rt, about=f"expiry:{sub}:{pm}")]
    assert statuses == ["sent", "cancelled"]


# ---- end to end: the notice's link changes the card, and the rest of the notices stop ----------


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with smtp_sink() as s:
        yield s


@pytest.fixture
def mail_story(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any, sink: SmtpSink
) -> Iterator[Story]:
    rt = messaging_runtime(database_url, tmp_path, clock, fake_gateway, smtp_url=sink.url)
    yield Story(rt, fake_gateway, clock)
    rt.db.dispose()


def test_the_notice_link_changes_the_card_and_stops_the_later_notices(
    mail_story: Story, sink: SmtpSink
) -> None:
    story = mail_story
    cus, pm, sub = _subscriber_with_expiring_card(story)
    story.worker.run_daily_jobs()
    # The stored notices hold a placeholder, never a usable token.
    for row in messages(story.rt, about=f"expiry:{sub}:{pm}"):
        assert "/update/{card-update-token}" in row.body
    story.worker.run_until_idle()
    [mail] = sink.messages
    assert mail["Subject"] == "Your card for Acme expires soon"
    body = mail.get_content()
    assert "Visa card ending in 1111" in body and "$15.00" in body
    token = body.split("http://recovery.test/update/", 1)[1].split()[0]
    with story.rt.db.transaction() as s:
        link = s.scalars(
            select(CardUpdateLink).where(CardUpdateLink.token_hash == links.token_hash(token))
        ).one()
        assert (link.case_id, link.subscription_id, link.customer_id) == (None, sub, cus)
        assert link.expires_at - link.created_at == timedelta(days=30)
    # The last notice, due weeks later, carries a link good for 30 days from its sending.
    last = messages(story.rt, about=f"expiry:{sub}:{pm}")[-1]
    with story.rt.db.transaction() as s:
        later = s.scalars(
            select(CardUpdateLink).where(CardUpdateLink.message_key == last.dedupe_key)
        ).one()
        assert later.expires_at == last.send_after + timedelta(days=30)
    client = create_app(runtime=story.rt).test_client()
    page = client.get(f"/update/{token}")
    assert page.status_code == 200
    assert "Your card expires soon" in page.text and "Visa ending in 1111" in page.text
    assert "$15.00" in page.text and "kim@example.com" not in page.text
    posted = client.post(f"/update/{token}", data={"csrf_token": csrf_from(page.text)})
    assert posted.status_code == 303
    checkout = posted.headers["Location"].rsplit("/", 1)[1]
    story.fake.complete_checkout_session(checkout, brand="mastercard", last4="4444")
    done = client.get(f"/update/{token}/done?session_id={checkout}")
    assert done.status_code == 200 and "Your card was saved" in done.text
    # The new card is the default on the customer and the subscription; nothing was charged.
    new_pm = story.fake.store["subscription"][sub]["default_payment_method"]
    assert new_pm != pm
    assert story.fake.store["customer"][cus]["invoice_settings"]["default_payment_method"] == new_pm
    assert [r for r in story.fake.requests if r.method == "pay_invoice"] == []
    assert [m.status for m in messages(story.rt, about=f"expiry:{sub}:{pm}")] == [
        "sent",
        "cancelled",
    ]
    story.deliver()  # Stripe's own events for the change arrive: nothing more happens
    story.clock.advance(timedelta(days=30))
    story.worker.run_until_idle()
    story.worker.run_daily_jobs()
    story.worker.run_until_idle()
    assert len(sink.messages) == 1


def test_a_notice_link_stops_working_when_the_subscription_ends(story: Story, client: Any) -> None:
    cus, _pm, sub = _subscriber_with_expiring_card(story)
    with story.rt.db.transaction() as s:
        url = links.link_for_message(
            s,
            message_key="test:expiry",
            customer_id=cus,
            subscription_id=sub,
            now=story.clock.now(),
            settings=story.rt.settings,
            rules=story.rt.rules,
        )
    token = url.rsplit("/", 1)[1]
    assert client.get(f"/update/{token}").status_code == 200
    ended = {**story.fake.retrieve_subscription(sub), "status": "canceled"}
    story.clock.advance(timedelta(seconds=1))
    story.fake.add_event("customer.subscription.deleted", ended)
    story.deliver()
    assert client.get(f"/update/{token}").status_code == 410
