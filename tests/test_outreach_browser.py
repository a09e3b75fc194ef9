"""The outreach pages in headless Chromium at phone width, in all eight locales: the annual
offer, "no thanks", the come-back page, unsubscribing and a bad link - fully translated, no
script, nothing loaded from elsewhere, no sideways scrolling, labelled buttons, readable
contrast. Screenshots in artifacts/screenshots/outreach/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recovery import i18n
from recovery.adapters.clock import FrozenClock
from recovery.web import i18n as web_i18n
from tests.support.browser import PHONE, Served, chromium, contrast, shot
from tests.support.outreach import outreach_story, token_in

CONSENT = {"marketing_consent": "yes"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def _check(tab: Any, base: str) -> None:
    assert tab.eval_on_selector_all("script", "els => els.length") == 0
    elsewhere = tab.evaluate(
        "performance.getEntriesByType('resource').map(e => e.name)"
        f".filter(n => !n.startsWith({base!r}))"
    )
    assert elsewhere == []
    assert tab.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert tab.locator("h1").count() == 1
    for button in tab.get_by_role("button").all():
        assert button.inner_text().strip()
        colour, background = button.evaluate(
            "e => [getComputedStyle(e).color, getComputedStyle(e).backgroundColor]"
        )
        assert contrast(colour, background) >= 4.5


@pytest.mark.parametrize("locale", i18n.SUPPORTED_LOCALES)
def test_outreach_pages_in_every_locale_at_phone_width(
    browser: Any,
    sqlite_url: str,
    tmp_path: Path,
    clock: FrozenClock,
    fake_gateway: Any,
    locale: str,
) -> None:
    served = Served()
    english = locale == "en"
    with outreach_story(sqlite_url, tmp_path, clock, fake_gateway, public_url=served.url) as story:
        served.serve(story.app)
        offered = story.subscriber(email="offer@example.com", locales=[locale])
        story.run_job("term_offers")
        leaving = story.subscriber(email="left@example.com", locales=[locale], metadata=CONSENT)
        story.fake.cancel_subscription(
            leaving.subscription, at_period_end=False, idempotency_key="end"
        )
        story.deliver()
        story.later(15)
        annual = token_in(story.mails_to("offer@example.com")[0], "annual")
        come_back = token_in(story.mails_to("left@example.com")[0], "come-back")
        assert offered.customer

        context = browser.new_context(viewport=PHONE, locale=locale.replace("_", "-"))
        tab = context.new_page()
        try:
            for name, path, status, english_heading, button in (
                ("annual", f"/annual/{annual}", 200, "Pay yearly and save", "No thanks"),
                ("come-back", f"/come-back/{come_back}", 200, "Welcome back", None),
                ("unsubscribe", f"/unsubscribe/{come_back}", 200, "Unsubscribe", "Unsubscribe"),
                ("unknown", "/annual/" + "Q" * 43, 404, "This link doesn't work", None),
            ):
                response = tab.goto(served.url + path)
                assert response.status == status, (locale, name)
                assert tab.get_attribute("html", "lang") == i18n.html_lang(locale)
                heading = tab.inner_text("h1")
                assert (heading == english_heading) is english, (locale, name, heading)
                _check(tab, served.url)
                shot(tab, f"{locale}-{name}", folder="outreach")
                if button is not None:
                    tab.get_by_role("button").last.click()
                    tab.wait_for_load_state()
                    _check(tab, served.url)
                    shot(tab, f"{locale}-{name}-after", folder="outreach")
        finally:
            context.close()
            served.stop()
    assert web_i18n.missing(story.app) == set()
