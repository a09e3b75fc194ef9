"""The cancel flow in headless Chromium against the app on a real port: every path end to end,
double submits, tampered and expired links, accessibility basics, screenshots of each step
(artifacts/screenshots/, kept by CI)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from recovery import i18n
from recovery.adapters.clock import FrozenClock
from recovery.models import OfferAcceptance
from recovery.web import i18n as web_i18n
from tests.conftest import API_KEY, START
from tests.support.browser import PHONE, Served, chromium, contrast, shot
from tests.support.cancel_flow import Flow, make_flow, session_row
from tests.support.cancel_pages import expired_path, prepare_pages


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@dataclass
class Site:
    flow: Flow
    url: str

    def start(self, locale: str | None = None) -> tuple[str, str]:
        body = {
            "customer": "cus_ada",
            "subscription": "sub_ada",
            "return_url": f"{self.url}/healthz?from=cancel",
            **({"locale": locale} if locale else {}),
        }
        request = urllib.request.Request(
            f"{self.url}/api/v1/cancel-sessions",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            data = json.loads(response.read())
        return str(data["url"]), str(data["id"])

    def writes(self) -> list[str]:
        return [w.method for w in self.flow.writes()]


@pytest.fixture
def site(sqlite_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any) -> Iterator[Site]:
    served = Served()
    flow = make_flow(sqlite_url, tmp_path, clock, fake_gateway, public_url=served.url)
    served.serve(flow.app)
    yield Site(flow, served.url)
    served.stop()
    flow.runtime.db.dispose()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport=PHONE, locale="en-US")
    tab = context.new_page()
    yield tab
    context.close()


def choose(page: Any, label: str) -> None:
    page.get_by_label(label, exact=True).check()
    page.get_by_role("button", name="Continue").click()


def test_saved_by_pause(site: Site, page: Any) -> None:
    url, session_id = site.start()
    page.goto(url)
    shot(page, "pause-1-survey")
    choose(page, "I only needed it for a while")
    assert page.get_by_role("heading", level=2).inner_text() == "Pause your subscription instead"
    shot(page, "pause-2-offer")
    page.get_by_role("button", name="Pause until January 2, 2027").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Your subscription is paused"
    shot(page, "pause-3-done")
    assert site.writes() == ["pause_subscription"]
    assert session_row(site.flow, session_id).outcome == "saved_by_pause"


def test_saved_by_downgrade(site: Site, page: Any) -> None:
    url, session_id = site.start()
    page.goto(url)
    choose(page, "It's too expensive")
    shot(page, "downgrade-2-offer")
    page.get_by_role("button", name="Switch to the lower-priced plan").click()
    assert "You now pay $9.00 per month." in page.content()
    shot(page, "downgrade-3-done")
    assert site.writes() == ["change_subscription_price"]
    assert session_row(site.flow, session_id).outcome == "saved_by_downgrade"


def test_saved_by_longer_term(site: Site, page: Any) -> None:
    with site.flow.runtime.db.transaction() as s:  # a downgrade last month: none again yet
        s.add(
            OfferAcceptance(
                session_id="cxs_before",
                customer_id="cus_ada",
                subscription_id="sub_ada",
                kind="downgrade",
                terms={},
                idempotency_key="before",
                accepted_at=START - timedelta(days=40),
            )
        )
    url, session_id = site.start()
    page.goto(url)
    choose(page, "It's too expensive")
    text = page.inner_text("main")
    assert "Charged today: $178.67" in text and "Next charge: $192.00 on November 2, 2027" in text
    shot(page, "longer-term-2-offer")
    page.get_by_role("button", name="Switch to yearly billing").click()
    assert page.get_by_role("heading", level=1).inner_text() == "You're now on yearly billing"
    shot(page, "longer-term-3-done")
    assert session_row(site.flow, session_id).outcome == "saved_by_longer_term"


def test_cancel_straight_from_the_first_page(site: Site, page: Any) -> None:
    url, session_id = site.start()
    page.goto(url)
    page.get_by_label("Anything else you would like to tell us? (optional)").fill("Moving abroad")
    page.get_by_role("button", name="Cancel my subscription").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Your subscription is cancelled"
    assert "You can keep using your subscription until November 22, 2026" in page.content()
    shot(page, "cancel-first-page-done")
    back = page.get_by_role("link", name="Back to Acme").get_attribute("href")
    assert back == f"{site.url}/healthz?from=cancel&outcome=cancelled"
    row = session_row(site.flow, session_id)
    assert (row.outcome, row.reason, row.reason_text) == ("cancelled", None, "Moving abroad")
    assert site.writes() == ["cancel_subscription"]


def test_cancel_after_declining_the_offer(site: Site, page: Any) -> None:
    url, session_id = site.start()
    page.goto(url)
    choose(page, "I'm not using it enough")
    assert page.get_by_role("button", name="Cancel my subscription").is_visible()
    page.get_by_role("button", name="Cancel my subscription").click()
    assert page.get_by_role("heading", level=1).inner_text() == "Your subscription is cancelled"
    shot(page, "cancel-after-offer-done")
    row = session_row(site.flow, session_id)
    assert (row.outcome, row.offer_shown, row.reason) == ("cancelled", "pause", "not_using")


def test_keep_my_subscription_returns_to_the_business(site: Site, page: Any) -> None:
    url, session_id = site.start()
    page.goto(url)
    choose(page, "Other")
    page.get_by_role("button", name="Keep my subscription").click()
    page.wait_for_url(f"{site.url}/healthz?from=cancel&outcome=abandoned")
    assert site.writes() == []
    assert session_row(site.flow, session_id).outcome == "abandoned"


def test_a_double_click_and_a_second_tab_make_one_stripe_change(site: Site, page: Any) -> None:
    url, session_id = site.start()
    page.goto(url)
    choose(page, "It's too expensive")
    second = page.context.new_page()  # same subscriber, another tab on the offer
    second.goto(page.url)
    page.get_by_role("button", name="Switch to the lower-priced plan").dblclick()
    page.wait_for_url("**/done")
    second.get_by_role("button", name="Switch to the lower-priced plan").click()
    assert second.get_by_role("heading", level=1).inner_text() == "Your plan has changed"
    page.reload()
    assert site.writes() == ["change_subscription_price"]
    with site.flow.runtime.db.transaction() as s:
        assert s.query(OfferAcceptance).filter_by(session_id=session_id).count() == 1


def test_a_tampered_session_or_signature_is_forbidden(site: Site, page: Any) -> None:
    url, _ = site.start()
    token = url.rsplit("/", 1)[1]
    forged = url[: -len(token)] + token[::-1]
    response = page.goto(forged)
    assert response.status == 403
    assert page.get_by_role("heading", level=1).inner_text() == "This link isn't valid"
    shot(page, "tampered-session")
    response = page.goto(
        f"{site.url}/cancel/start?customer=cus_ada&subscription=sub_ada"
        f"&timestamp={int(START.timestamp())}&return_url=x&signature={'ab' * 32}"
    )
    assert response.status == 403


def test_an_expired_session_gets_a_friendly_page(site: Site, page: Any) -> None:
    url, _ = site.start()
    site.flow.clock.advance(timedelta(minutes=61))
    response = page.goto(url)
    assert response.status == 410
    assert page.get_by_role("heading", level=1).inner_text() == "This link has expired"
    shot(page, "expired")
    assert site.writes() == []


def test_the_survey_is_accessible(site: Site, page: Any) -> None:
    url, _ = site.start()
    page.goto(url)
    # Every control has a label; nothing is ticked for the subscriber.
    unlabeled = page.eval_on_selector_all(
        "input:not([type=hidden]), textarea", "els => els.filter(e => !e.labels.length).length"
    )
    assert unlabeled == 0
    assert page.eval_on_selector_all("input:checked", "els => els.length") == 0
    # Focus order follows the page: the reasons, the message, Continue, then Cancel.
    order = []
    for _ in range(4):
        page.keyboard.press("Tab")
        order.append(
            page.evaluate("document.activeElement.name || document.activeElement.innerText")
        )
    assert order == ["reason", "text", "Continue", "Cancel my subscription"]
    # Text and buttons meet WCAG AA contrast (4.5:1).
    for selector in ("legend", ".hint", "label", ".btn-cancel", ".btn-plain", "p"):
        colour, background = page.eval_on_selector(
            selector,
            """e => { let b = e, bg = 'rgba(0, 0, 0, 0)';
                while (b && (bg = getComputedStyle(b).backgroundColor) === 'rgba(0, 0, 0, 0)')
                    b = b.parentElement;
                return [getComputedStyle(e).color, bg]; }""",
        )
        assert contrast(colour, background) >= 4.5, selector
    assert page.eval_on_selector_all("script", "els => els.length") == 0


@pytest.mark.parametrize("locale", i18n.SUPPORTED_LOCALES)
def test_every_page_in_every_locale_renders_fully_translated(
    site: Site, browser: Any, locale: str
) -> None:
    context = browser.new_context(viewport=PHONE, locale=locale.replace("_", "-"))
    tab = context.new_page()
    english = locale == "en"
    try:
        pages = [(p.name, p.url, p.status, p.expect) for p in prepare_pages(site.flow, locale)]
        pages.append(("expired", expired_path(site.flow, locale), 410, "This link has expired"))
        pages.append(("invalid", "/cancel/" + "Q" * 43, 403, "This link isn't valid"))
        for name, path, status, expect in pages:
            response = tab.goto(site.url + path)
            assert response.status == status, (locale, name)
            assert tab.get_attribute("html", "lang") == i18n.html_lang(locale)
            assert (expect in tab.inner_text("main")) is english, (locale, name)
            shot(tab, f"{locale}-{name}", folder="cancel_flow/locales")
    finally:
        context.close()
    assert web_i18n.missing(site.flow.app) == set()
