"""Account contacts: the API, the metadata keys, and who gets which reminder - the billing
contact, and the owners too for the final notice - each with a link of their own that removing
the contact revokes alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from recovery.adapters.clock import FrozenClock
from recovery.models import MessageStatus, OutboxMessage
from recovery.services.card_update.links import message_token
from tests.conftest import API_KEY
from tests.support.outreach import Outreach, body, outreach_story, token_in

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def story(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any
) -> Iterator[Outreach]:
    with outreach_story(database_url, tmp_path, clock, fake_gateway) as made:
        yield made


def _contacts(story: Outreach, customer: str) -> list[dict[str, Any]]:
    answer = story.client.get(f"/api/v1/customers/{customer}/contacts", headers=AUTH)
    assert answer.status_code == 200
    data: list[dict[str, Any]] = answer.json["data"]
    return data


def test_the_contacts_api_adds_lists_and_removes(story: Outreach) -> None:
    kim = story.subscriber()
    path = f"/api/v1/customers/{kim.customer}/contacts"
    new = {"role": "billing", "email": "AP@Example.com", "phone": "+14155550123"}
    created = story.client.post(path, json={**new, "sms_consent": True}, headers=AUTH)
    assert created.status_code == 201
    assert created.json["email"] == "ap@example.com" and created.json["source"] == "api"
    again = story.client.post(path, json={**new, "sms_consent": True}, headers=AUTH)
    assert again.status_code == 200 and again.json["id"] == created.json["id"]
    assert [c["email"] for c in _contacts(story, kim.customer)] == ["ap@example.com"]

    for bad, says in (
        ({"role": "boss", "email": "a@example.com"}, "role must be one of"),
        ({"role": "owner", "email": "not-an-address"}, "email is not an email address"),
        ({"role": "owner"}, "needs an email or a phone"),
        ({"role": "owner", "phone": "12"}, "E.164"),
        ({"role": "owner", "email": "a@example.com", "locale": "xx"}, "locale must be one of"),
        ({"role": "owner", "email": "a@example.com", "sms_consent": "yes"}, "true or false"),
        ({"role": "owner", "email": "a@example.com", "extra": 1}, "unknown field: extra"),
        ([1, 2], "JSON object"),
    ):
        answer = story.client.post(path, json=bad, headers=AUTH)
        assert answer.status_code == 400, bad
        assert says in answer.json["error"]["message"], (bad, answer.json)
    assert (
        story.client.post(
            path, data="{not json", headers={**AUTH, "Content-Type": "application/json"}
        ).status_code
        == 400
    )
    unknown = story.client.post("/api/v1/customers/cus_nobody/contacts", json=new, headers=AUTH)
    assert unknown.status_code == 404
    assert (
        story.client.get("/api/v1/customers/cus_nobody/contacts", headers=AUTH).status_code == 404
    )

    contact_id = created.json["id"]
    assert story.client.delete(f"{path}/{contact_id}", headers=AUTH).json == {
        "id": contact_id,
        "deleted": True,
    }
    assert story.client.delete(f"{path}/{contact_id}", headers=AUTH).status_code == 404
    assert _contacts(story, kim.customer) == []


def test_metadata_contacts_follow_the_customer(story: Outreach) -> None:
    kim = story.subscriber(
        metadata={
            "recovery_billing_email": "ap@example.com",
            "recovery_owner_emails": "ceo@example.com, cto@example.com,not-an-address",
        }
    )
    assert sorted((c["role"], c["email"]) for c in _contacts(story, kim.customer)) == [
        ("billing", "ap@example.com"),
        ("owner", "ceo@example.com"),
        ("owner", "cto@example.com"),
    ]
    changed = story.fake.store["customer"][kim.customer]
    changed["metadata"] = {"recovery_billing_email": "finance@example.com"}
    story.clock.set(story.clock.now().replace(minute=5))
    story.fake.add_event("customer.updated", changed)
    story.deliver()
    assert [(c["role"], c["email"]) for c in _contacts(story, kim.customer)] == [
        ("billing", "finance@example.com")
    ]


def test_reminders_reach_the_billing_contact_and_the_final_notice_the_owners_too(
    story: Outreach,
) -> None:
    kim = story.subscriber(
        email="kim@example.com",
        metadata={
            "recovery_billing_email": "ap@example.com",
            "recovery_owner_emails": "ceo@example.com",
        },
    )
    path = f"/api/v1/customers/{kim.customer}/contacts"
    story.client.post(
        path,
        json={"role": "billing", "phone": "+14155550123", "sms_consent": True, "locale": "de"},
        headers=AUTH,
    )
    invoice = story.fake.add_invoice(kim.customer, subscription_id=kim.subscription)
    assert story.stripe_charges(invoice["id"], decline_code="insufficient_funds") == "declined"
    story.run_due()

    with story.rt.db.transaction() as s:
        planned = s.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()
        by_template = {
            template: sorted(m.recipient for m in planned if m.template == template)
            for template in {m.template for m in planned}
        }
        sms = [m for m in planned if m.channel == "sms"]
        keys = {m.recipient: m.dedupe_key for m in planned if m.template == "final_notice"}
    # the billing contact, not the customer's own address; the owner only for the final notice
    assert by_template["soft_decline"] == ["+14155550123", "ap@example.com", "ap@example.com"]
    assert by_template["final_notice"] == ["ap@example.com", "ceo@example.com"]
    assert [(m.recipient, m.locale) for m in sms] == [("+14155550123", "de")]
    [first] = story.sink.messages
    assert str(first["To"]) == "ap@example.com"
    update_token = token_in(first, "update")
    assert story.client.get(f"/update/{update_token}").status_code == 200

    # each final notice carries its own link; removing the owner revokes the owner's alone
    owner_link = message_token(story.rt.settings.secret_key, keys["ceo@example.com"])
    billing_link = message_token(story.rt.settings.secret_key, keys["ap@example.com"])
    assert owner_link != billing_link
    assert story.client.get(f"/update/{owner_link}").status_code == 200
    owner = next(c for c in _contacts(story, kim.customer) if c["role"] == "owner")
    assert story.client.delete(f"{path}/{owner['id']}", headers=AUTH).status_code == 200
    assert story.client.get(f"/update/{owner_link}").status_code == 410
    assert story.client.get(f"/update/{billing_link}").status_code == 200
    with story.rt.db.transaction() as s:
        owner_notice = s.scalars(
            select(OutboxMessage).where(OutboxMessage.recipient == "ceo@example.com")
        ).one()
        assert owner_notice.status == MessageStatus.CANCELLED
    assert "Hi Kim," in body(first)


def test_marketing_goes_to_the_billing_contact_with_its_own_opt_out(story: Outreach) -> None:
    kim = story.subscriber(
        metadata={"recovery_billing_email": "ap@example.com", "marketing_consent": "yes"}
    )
    story.run_job("term_offers")
    [offer] = story.sink.messages
    assert str(offer["To"]) == "ap@example.com"  # the payer, not kim@
    token = token_in(offer, "annual")
    story.app.test_client().post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    story.client.post(
        f"/api/v1/customers/{kim.customer}/contacts",
        json={"role": "billing", "email": "finance@example.com"},
        headers=AUTH,
    )
    story.fake.cancel_subscription(kim.subscription, at_period_end=False, idempotency_key="end")
    story.deliver()
    story.later(15)
    # ap@ unsubscribed; finance@ did not: opt-outs are per contact
    assert [str(m["To"]) for m in story.sink.messages[1:]] == ["finance@example.com"]
