"""What a subscriber reads is right in their language: a Russian date ends a sentence with one
period, a short SMS still says why it was sent, and a used or expired card-update link speaks
the customer's language whatever the browser asks for."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from recovery import i18n
from recovery.domain import sms as sms_rules
from recovery.models import Customer
from recovery.runtime import Runtime
from recovery.services.messaging.reminders import render_email, render_sms
from tests.support.card_update import failed_renewal_with_link
from tests.support.scenario import Story

LINK = "https://billing.acme-example.com/update/" + "A" * 43
TEMPLATES = ["soft_decline", "card_replace", "authentication_needed", "card_expiring"]
EMAILS = [*TEMPLATES, "final_notice", "recovered", "subscription_ended"]


def _context(locale: str) -> dict[str, Any]:
    return {
        "business": "Acme",
        "sender": "Dana",
        "product": "Acme",
        "name": "Kim",
        "amount": i18n.format_money(2700, "eur", locale),
        "card": "",
        "link": LINK,
        "deadline": i18n.format_day(datetime(2026, 12, 18, tzinfo=UTC), locale),
    }


@pytest.mark.parametrize("locale", i18n.SUPPORTED_LOCALES)
@pytest.mark.parametrize("template", EMAILS)
def test_no_sentence_ends_with_a_doubled_period(locale: str, template: str) -> None:
    message = render_email(template, locale, _context(locale))
    text = message.subject + "\n" + message.body
    assert not re.search(r"(?<!\.)\.\.(?!\.)", text), text


def test_a_russian_date_reads_without_the_doubled_period() -> None:
    body = render_email("soft_decline", "ru", _context("ru")).body
    assert "18 декабря 2026." in body
    assert "г.." not in body


@pytest.mark.parametrize("locale", i18n.SUPPORTED_LOCALES)
@pytest.mark.parametrize("template", TEMPLATES)
def test_every_text_says_why_it_was_sent_in_every_language(locale: str, template: str) -> None:
    text = render_sms(template, locale, _context(locale), max_segments=2)
    assert text is not None, "not sent at all"
    assert sms_rules.segments(text).count <= 2
    stop = i18n.translations(locale).gettext("STOP to opt out")
    stop_long = i18n.translations(locale).gettext("Reply STOP to opt out.")
    reason = text.replace(LINK, "").replace(stop_long, "").replace(stop, "").replace("Acme", "")
    # What is left is the reason: words, not just punctuation ("Acme: <link> STOP ...").
    assert len(re.findall(r"\w", reason)) >= 8, text


# ---- the card-update page in the customer's language --------------------------------------------


@pytest.fixture
def story(runtime: Runtime, fake_gateway: Any, clock: Any) -> Story:
    return Story(runtime, fake_gateway, clock)


@pytest.mark.parametrize("state", ["expired", "used"])
def test_a_used_or_expired_link_speaks_the_customers_language(
    client: Any, runtime: Runtime, clock: Any, story: Story, state: str
) -> None:
    linked = failed_renewal_with_link(story, runtime)
    with runtime.db.transaction() as s:
        customer = s.get(Customer, linked.billing.customer)
        assert customer is not None
        customer.preferred_locales = ["th-TH"]
    if state == "expired":
        clock.set(clock.now() + timedelta(days=31))
    else:
        story.stripe_charges(linked.billing.invoice)  # paid: the case closes, the link is used
    response = client.get(f"/update/{linked.token}", headers={"Accept-Language": "en-US,en"})
    assert response.status_code == 410
    assert '<html lang="th"' in response.text
    assert "This link is no longer active" not in response.text
    # A link nobody issued says nothing about anyone: the browser's language then.
    unknown = client.get("/update/" + "B" * 43, headers={"Accept-Language": "de"})
    assert unknown.status_code == 404 and '<html lang="de"' in unknown.text
