"""The pause page and the card-update page's bank section in headless Chromium at phone width
(390 px), in all eight locales: fully translated, no script, nothing loaded from elsewhere, no
sideways scrolling, and axe-core (WCAG 2.1 A/AA and best practice) finds nothing - before and
after each button; and the dashboard's pages showing contacts, outreach and pauses. Screenshots
in artifacts/screenshots/pause/."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from recovery import i18n
from recovery.adapters.clock import FrozenClock
from recovery.services.outreach import contacts
from recovery.services.registry import build_runtime
from recovery.web import i18n as web_i18n
from tests.conftest import make_settings
from tests.support.a11y import assert_accessible
from tests.support.browser import PHONE, Served, chromium, shot
from tests.support.dashboard import ADMIN, PASSWORD, add_user
from tests.support.messaging import with_locales
from tests.support.outreach import Outreach, body, token_in
from tests.support.smtp_sink import smtp_sink

RULES = '[retry]\nend_of_dunning = "offer_pause"\npause_months = 3\n'


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def _check(tab: Any, base: str, name: str) -> str:
    assert tab.eval_on_selector_all("script", "els => els.length") == 0, name
    elsewhere = tab.evaluate(
        "performance.getEntriesByType('resource').map(e => e.name)"
        f".filter(n => !n.startsWith({base!r}))"
    )
    assert elsewhere == [], name
    assert tab.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], name
    assert tab.locator("h1").count() == 1, name
    assert_accessible(tab, name)
    shot(tab, name, folder="pause")
    return " ".join(tab.inner_text("main").split())


@pytest.mark.parametrize("locale", i18n.SUPPORTED_LOCALES)
def test_the_bank_section_and_the_pause_page_in_every_locale_at_phone_width(
    browser: Any,
    sqlite_url: str,
    tmp_path: Path,
    clock: FrozenClock,
    fake_gateway: Any,
    locale: str,
) -> None:
    served = Served()
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    english = locale == "en"
    with smtp_sink() as sink:
        settings = make_settings(
            sqlite_url, tmp_path, rules_path=rules, smtp_url=sink.url, public_url=served.url
        )
        rt = build_runtime(settings, clock=clock, gateway=fake_gateway)
        story = Outreach(rt, fake_gateway, clock, sink)
        served.serve(story.app)
        clock.set(datetime(2026, 11, 4, 9, tzinfo=UTC))  # a Wednesday
        billing = story.customer(amount=2000)
        with_locales(story, billing, [locale])
        story.deliver()
        story.fake.fail_next_payment(billing.invoice, "call_issuer", times=30)
        assert story.stripe_charges(billing.invoice) == "declined"
        story.run_due()
        [reminder] = story.mails_to("kim@example.com")
        token = token_in(reminder, "update")
        clock.set(clock.now() + timedelta(minutes=30))

        context = browser.new_context(
            viewport=PHONE, locale=locale.replace("_", "-"), bypass_csp=True
        )
        tab = context.new_page()
        try:
            response = tab.goto(f"{served.url}/update/{token}#bank")
            assert response.status == 200
            assert tab.get_attribute("html", "lang") == i18n.html_lang(locale)
            _check(tab, served.url, f"{locale}-bank")
            bank = tab.locator("#bank")
            assert (bank.locator("h2").inner_text() == "Contacted your bank?") is english
            bank.get_by_role("button").click()
            tab.wait_for_load_state()
            pressed = _check(tab, served.url, f"{locale}-bank-pressed")
            said = tab.locator("#bank [role=status]").inner_text()
            assert (said == "Thank you. We'll try your card again within the hour.") is english
            assert said in pressed

            story.later(26.5)  # the final notice, two days before the window ends
            notice = [m for m in story.mails_to("kim@example.com") if "/pause/" in body(m)]
            assert len(notice) == 1, locale
            response = tab.goto(f"{served.url}/pause/{token_in(notice[0], 'pause')}")
            assert response.status == 200
            _check(tab, served.url, f"{locale}-pause")
            assert (tab.inner_text("h1") == "Pause instead of cancelling") is english
            assert tab.get_by_role("button").count() == 3  # one per month offered
            tab.get_by_role("button").first.click()
            tab.wait_for_load_state()
            _check(tab, served.url, f"{locale}-pause-accepted")
            assert (tab.inner_text("h1") == "Your subscription is paused") is english
            assert fake_gateway.store["subscription"][billing.subscription]["pause_collection"]
        finally:
            context.close()
            served.stop()
            rt.db.dispose()
    assert web_i18n.missing(story.app) == set()


@pytest.mark.parametrize("width", [PHONE, {"width": 1280, "height": 800}], ids=["phone", "wide"])
def test_the_dashboard_shows_contacts_outreach_and_pauses_accessibly(
    browser: Any,
    sqlite_url: str,
    tmp_path: Path,
    clock: FrozenClock,
    fake_gateway: Any,
    width: dict[str, int],
) -> None:
    """The customer page, the case page and the overview with an account's contact, its pause
    and the pause figures: axe-core finds nothing, nothing scrolls sideways."""
    served = Served()
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    with smtp_sink() as sink:
        settings = make_settings(
            sqlite_url, tmp_path, rules_path=rules, smtp_url=sink.url, public_url=served.url
        )
        rt = build_runtime(settings, clock=clock, gateway=fake_gateway)
        story = Outreach(rt, fake_gateway, clock, sink)
        served.serve(story.app)
        clock.set(datetime(2026, 11, 4, 9, tzinfo=UTC))
        billing = story.customer(amount=2000)
        story.deliver()
        story.fake.fail_next_payment(billing.invoice, "call_issuer", times=30)
        story.stripe_charges(billing.invoice)
        story.later(26.5)
        [notice] = [m for m in story.mails_to("kim@example.com") if "/pause/" in body(m)]
        token = token_in(notice, "pause")
        csrf = story.csrf(f"/pause/{token}")
        story.client.post(f"/pause/{token}", data={"csrf_token": csrf, "months": "2"})
        story.deliver()
        contacts.add(rt, billing.customer, {"role": "billing", "email": "ap@example.com"})
        add_user(rt, ADMIN, "admin")
        case_id = story.case(billing.invoice).id
        day = clock.now().date().isoformat()
        try:
            tab = browser.new_context(viewport=width, locale="en-US", bypass_csp=True).new_page()
            tab.goto(f"{served.url}/login")
            tab.get_by_label("Email").fill(ADMIN)
            tab.get_by_label("Password").fill(PASSWORD)
            tab.get_by_role("button", name="Sign in").click()
            tab.wait_for_url(f"{served.url}/dashboard")
            name = "phone" if width == PHONE else "wide"
            for page, path, seen in (
                ("customer", f"/dashboard/customers/{billing.customer}", "Pause instead of a loss"),
                ("case", f"/dashboard/cases/{case_id}", "Paused instead of lost"),
                ("overview", f"/dashboard?period=custom&from={day}&to={day}", "Pauses instead"),
            ):
                tab.goto(served.url + path)
                assert seen in tab.inner_text("main"), page
                assert_accessible(tab, f"dashboard {page} {name}")
                wide = tab.evaluate("document.documentElement.scrollWidth <= innerWidth + 1")
                assert wide, page
                shot(tab, f"dashboard-{page}-{name}", folder="pause")
        finally:
            served.stop()
            rt.db.dispose()
