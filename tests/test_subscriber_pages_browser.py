"""Every page a subscriber can reach, in headless Chromium at desktop (1280 px) and phone
(390 px) widths, in more than one language: what each says is true for the subscription's real
state (issue 15), and axe-core (WCAG 2.1 A/AA and best practice) finds nothing on any of them.
Screenshots go to artifacts/screenshots/subscriber/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from recovery.adapters.clock import FrozenClock
from recovery.domain.stripe_objects.states import invoice_state, subscription_state
from recovery.models import Customer
from recovery.services.events import mirror
from tests.conftest import START
from tests.support.a11y import assert_accessible
from tests.support.browser import PHONE, Served, chromium, shot
from tests.support.cancel_flow import Flow, emails, make_flow
from tests.support.card_update import failed_renewal_with_link
from tests.support.scenario import Story
from tests.test_card_update_browser import Served as CardServed

DESKTOP = {"width": 1280, "height": 800}
WIDTHS = {"desktop": DESKTOP, "phone": PHONE}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def _tab(browser: Any, width: str, locale: str = "en-US") -> Any:
    # bypass_csp: the pages allow no script at all, so axe can only be injected past the CSP.
    context = browser.new_context(viewport=WIDTHS[width], locale=locale, bypass_csp=True)
    return context.new_page()


def _text(page: Any) -> str:
    return " ".join(page.inner_text("main").split())


def _check(page: Any, name: str) -> str:
    """The page's text, after axe-core found nothing and a screenshot was taken."""
    assert_accessible(page, name)
    # Nothing wider than the screen: no sideways scrolling on a phone.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), name
    shot(page, name, "subscriber")
    return _text(page)


# ---- the cancel flow ----------------------------------------------------------------------------


@pytest.fixture
def site(sqlite_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any) -> Iterator[Any]:
    served = Served()
    flow = make_flow(sqlite_url, tmp_path, clock, fake_gateway, public_url=served.url)
    served.serve(flow.app)
    yield flow, served.url
    served.stop()
    flow.runtime.db.dispose()


def _past_due(flow: Flow) -> str:
    sub = flow.gateway.store["subscription"][flow.seeded.subscription]
    sub["status"] = "past_due"
    invoice = flow.gateway.add_invoice(
        flow.seeded.customer,
        subscription_id=flow.seeded.subscription,
        status="open",
        attempt_count=2,
        created=int((START - timedelta(days=3)).timestamp()),
    )
    ts = int(START.timestamp())
    with flow.runtime.db.transaction() as s:
        mirror.apply_subscription(s, subscription_state(sub), ts)
        mirror.apply_invoice(s, invoice_state(invoice), ts)
    return str(invoice["id"])


def _session_url(flow: Flow, base: str, **body: Any) -> str:
    _page, started = flow.start(**body)
    return str(started["url"]).replace("http://recovery.test", base)


@pytest.mark.parametrize("width", ["desktop", "phone"])
def test_cancel_in_dunning_tells_the_truth_on_every_page(
    site: Any, browser: Any, width: str
) -> None:
    flow, base = site
    invoice_id = _past_due(flow)
    tab = _tab(browser, width)
    tab.goto(_session_url(flow, base))
    survey = _check(tab, f"cancel-past-due-survey-{width}")
    assert "the period you have paid for" not in survey  # it was never paid
    assert "Your payment of $20.00, due on October 30, 2026, hasn't gone through." in survey
    assert "ends right away and the unpaid $20.00 is cancelled" in survey
    tab.get_by_role("button", name="Cancel my subscription").click()
    done = _check(tab, f"cancel-past-due-done-{width}")
    assert "The unpaid $20.00 was cancelled: you don't owe it" in done
    assert "keep using" not in done
    assert flow.gateway.store["invoice"][invoice_id]["status"] == "void"
    [mail] = emails(flow, "cancel_confirmation")
    assert "The unpaid $20.00 was cancelled" in mail.body


@pytest.mark.parametrize("width", ["desktop", "phone"])
def test_a_date_that_has_passed_is_in_the_past_tense_in_portuguese(
    site: Any, browser: Any, width: str
) -> None:
    flow, base = site
    tab = _tab(browser, width, "pt-BR")
    tab.goto(_session_url(flow, base, locale="pt-BR"))
    tab.get_by_role("button", name="Cancelar minha assinatura").click()
    assert "Você pode continuar usando sua assinatura até 22 de novembro de 2026." in _text(tab)
    flow.clock.advance(timedelta(days=32))  # seen on 4 December
    tab.reload()
    done = _check(tab, f"cancel-done-after-the-date-pt-{width}")
    assert "continuar usando" not in done
    assert "Sua assinatura terminou em 22 de novembro de 2026." in done
    # A subscription already cancelled elsewhere, opened after its end: ended, not "until".
    flow.gateway.store["subscription"][flow.seeded.subscription]["cancel_at_period_end"] = True
    tab.goto(_session_url(flow, base, locale="pt-BR"))
    already = _check(tab, f"cancel-already-ended-pt-{width}")
    assert "Sua assinatura terminou em 22 de novembro de 2026." in already


@pytest.mark.parametrize("width", ["desktop", "phone"])
def test_an_accepted_offer_is_confirmed_on_the_page_and_by_email(
    site: Any, browser: Any, width: str
) -> None:
    flow, base = site
    tab = _tab(browser, width, "de-DE")
    tab.goto(_session_url(flow, base, locale="de"))
    _check(tab, f"cancel-survey-de-{width}")
    tab.get_by_label("Ich habe es nur eine Zeit lang gebraucht").check()
    tab.get_by_role("button", name="Weiter").click()
    offer = _check(tab, f"cancel-offer-pause-de-{width}")
    assert "Pausieren" in offer or "pausier" in offer
    flow.clock.advance(timedelta(minutes=1))  # reading the offer
    tab.locator("button[name=months]").first.click()
    done = _check(tab, f"cancel-offer-accepted-de-{width}")
    assert "Wir haben eine Bestätigung an ada@example.com gesendet." in done
    [mail] = emails(flow, "offer_confirmation")
    assert mail.locale == "de" and mail.subject == "Ihr Abo ist pausiert - Acme"
    # Changing one's mind on a paused subscription: no "period you have paid for".
    assert "instead of resuming" not in done  # German page: the German sentence
    assert re.search(r"statt fortgesetzt zu werden", done)


@pytest.mark.parametrize("width", ["desktop", "phone"])
def test_cancel_flow_notices_are_accessible(site: Any, browser: Any, width: str) -> None:
    flow, base = site
    tab = _tab(browser, width, "ru-RU")
    url = _session_url(flow, base, locale="ru")
    flow.clock.advance(timedelta(hours=2))  # the session has expired
    tab.goto(url)
    expired = _check(tab, f"cancel-expired-ru-{width}")
    assert "Срок действия ссылки истёк" in expired or "истёк" in expired
    tab.goto(base + "/cancel/" + "x" * 40)
    _check(tab, f"cancel-invalid-ru-{width}")


# ---- the card-update page -----------------------------------------------------------------------


@pytest.fixture
def card_site(sqlite_url: str, tmp_path: Path, clock: Any, fake_gateway: Any) -> Iterator[Any]:
    served = CardServed(sqlite_url, tmp_path, clock, fake_gateway)
    yield served
    served.stop()


def _thai(served: Any, customer_id: str) -> None:
    with served.rt.db.transaction() as s:
        customer = s.get(Customer, customer_id)
        assert customer is not None
        customer.preferred_locales = ["th"]


@pytest.mark.parametrize("width", ["desktop", "phone"])
def test_card_update_pages_speak_the_customers_language_in_every_state(
    card_site: Any, browser: Any, clock: Any, width: str
) -> None:
    linked = failed_renewal_with_link(Story(card_site.rt, card_site.fake, clock), card_site.rt)
    _thai(card_site, linked.billing.customer)
    tab = _tab(browser, width, "en-US")  # the browser asks for English
    url = f"{card_site.url}/update/{linked.token}"
    tab.goto(url)
    assert tab.get_attribute("html", "lang") == "th"
    _check(tab, f"card-update-open-th-{width}")
    tab.locator("form button").click()  # Checkout (played here) saves the card, the page pays
    assert tab.get_attribute("html", "lang") == "th"
    _check(tab, f"card-update-paid-th-{width}")
    tab.goto(url)  # the same link, used: nothing is owed any more
    assert tab.get_attribute("html", "lang") == "th"
    used = _check(tab, f"card-update-used-th-{width}")
    assert "This link is no longer active" not in used
    clock.advance(timedelta(days=31))
    tab.goto(url)
    assert tab.get_attribute("html", "lang") == "th"
    _check(tab, f"card-update-expired-th-{width}")


# ---- GET / --------------------------------------------------------------------------------------


@pytest.mark.parametrize("width", ["desktop", "phone"])
def test_the_root_address_answers_a_page_that_points_to_the_dashboard(
    card_site: Any, browser: Any, width: str
) -> None:
    tab = _tab(browser, width, "es-ES")
    response = tab.goto(card_site.url + "/")
    assert response is not None and response.status == 200
    assert "text/html" in response.headers["content-type"]
    home = _check(tab, f"home-es-{width}")
    assert "Recuperación de pagos de Acme" in home
    link = tab.get_by_role("link", name="Abrir el panel")
    assert link.get_attribute("href") == "/dashboard"
    icon = tab.request.get(card_site.url + "/favicon.ico")
    assert icon.status == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    tab.goto(card_site.url + "/")
    assert tab.title() == "Recuperación de pagos de Acme"
