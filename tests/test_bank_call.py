""" "I've contacted my bank - try again" end to end on the Stripe fake, mail into aiosmtpd: a
call_issuer decline's reminder links to the card-update page's bank section; a press plans one
retry within the hour (on the timeline); the retry runs; a second press after it failed again
plans one more; a third is refused with a sentence that is true."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from recovery.adapters.clock import FrozenClock
from recovery.models import CaseEvent
from recovery.services.registry import build_runtime
from tests.conftest import make_settings
from tests.support.outreach import Outreach, body, token_in
from tests.support.smtp_sink import smtp_sink

BUTTON = "I've contacted my bank - try again"


@pytest.fixture
def story(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any
) -> Iterator[Outreach]:
    with smtp_sink() as sink:
        settings = make_settings(
            database_url, tmp_path, smtp_url=sink.url, public_url="http://recovery.test"
        )
        rt = build_runtime(settings, clock=clock, gateway=fake_gateway)
        try:
            yield Outreach(rt, fake_gateway, clock, sink)
        finally:
            rt.db.dispose()


def _call_issuer(story: Outreach, declines: int) -> tuple[Any, str]:
    story.clock.set(datetime(2026, 11, 4, 9, tzinfo=UTC))  # a Wednesday
    billing = story.customer(amount=2000)
    story.deliver()
    story.fake.fail_next_payment(billing.invoice, "call_issuer", times=declines)
    assert story.stripe_charges(billing.invoice) == "declined"
    story.run_due()
    [reminder] = story.mails_to("kim@example.com")
    story.clock.set(story.clock.now() + timedelta(minutes=40))  # Kim reads it, calls the bank
    return billing, token_in(reminder, "update")


def _press(story: Outreach, token: str) -> str:
    csrf = story.csrf(f"/update/{token}")
    answer = story.client.post(f"/update/{token}/bank", data={"csrf_token": csrf})
    assert answer.status_code == 200
    return str(answer.get_data(as_text=True))


def _charges(story: Outreach, invoice: str) -> int:
    return sum(
        1 for r in story.fake.requests if r.method == "pay_invoice" and r.params["id"] == invoice
    )


def test_press_retry_press_retry_then_a_third_press_is_refused(story: Outreach) -> None:
    billing, token = _call_issuer(story, declines=3)
    [reminder] = story.mails_to("kim@example.com")
    assert "Your bank asks you to contact them about this payment" in body(reminder)
    assert f"/update/{token}#bank" in body(reminder)
    page = story.client.get(f"/update/{token}").get_data(as_text=True)
    assert 'id="bank"' in page and BUTTON in page

    pressed_at = story.clock.now()
    answer = _press(story, token)
    assert "We'll try your card again within the hour." in answer
    case = story.case(billing.invoice)
    assert case.status == "retrying"
    assert case.next_retry_at is not None
    assert pressed_at < case.next_retry_at <= pressed_at + timedelta(hours=1)
    # a second tab pressing before the try: the same try, no second one
    again = _press(story, token)
    assert "A new try of your card is already planned" in again
    with story.rt.db.transaction() as s:
        lines = s.scalars(
            select(CaseEvent.summary).where(
                CaseEvent.case_id == case.id, CaseEvent.kind == "bank_called"
            )
        ).all()
    assert lines == [
        "the customer says they contacted their bank (1 of 2): one try within the hour"
    ]

    before = _charges(story, billing.invoice)
    story.later(1 / 24)
    assert _charges(story, billing.invoice) == before + 1  # tried once, declined again
    assert story.case(billing.invoice).status == "awaiting_customer"

    assert "within the hour" in _press(story, token)  # the second word
    story.later(1 / 24)
    assert _charges(story, billing.invoice) == before + 2

    third = _press(story, token)
    assert "You've told us twice already, and we tried your card again each time." in third
    assert BUTTON not in third
    assert story.case(billing.invoice).next_retry_at is None
    story.later(1)
    assert _charges(story, billing.invoice) == before + 2


def test_the_try_after_the_word_can_recover_the_payment(story: Outreach) -> None:
    billing, token = _call_issuer(story, declines=1)  # the bank lifted the block
    _press(story, token)
    story.later(1 / 24)
    case = story.case(billing.invoice)
    assert (case.status, case.recovered_via) == ("recovered", "our_retry")


def test_a_soft_decline_offers_no_bank_button(story: Outreach) -> None:
    story.clock.set(datetime(2026, 11, 4, 9, tzinfo=UTC))
    billing = story.customer(amount=2000)
    story.deliver()
    story.fake.fail_next_payment(billing.invoice, "insufficient_funds")
    story.stripe_charges(billing.invoice)
    story.run_due()
    [reminder] = story.mails_to("kim@example.com")
    assert "#bank" not in body(reminder)
    token = token_in(reminder, "update")
    assert BUTTON not in story.client.get(f"/update/{token}").get_data(as_text=True)
    answer = _press(story, token)
    assert 'id="bank"' not in answer
    assert story.case(billing.invoice).next_retry_at != story.clock.now() + timedelta(minutes=10)


def test_a_press_without_csrf_changes_nothing(story: Outreach) -> None:
    billing, token = _call_issuer(story, declines=3)
    assert story.client.post(f"/update/{token}/bank").status_code == 400
    assert story.case(billing.invoice).next_retry_at is None
