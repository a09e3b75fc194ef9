"""The card-update page in a real headless Chromium, served on a loopback port.

The Stripe fake's Checkout URL points at a tiny route served here that plays the customer on
Stripe's page: it saves the card (`complete_checkout_session`) and redirects to the success URL
with the session id, as Checkout does.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import redirect
from werkzeug.serving import make_server

from recovery.app import create_app
from recovery.domain.cases import CaseStatus, RecoveredVia
from recovery.models import RecoveryCase
from recovery.runtime import Runtime
from recovery.services.registry import build_runtime
from tests.conftest import make_settings, skip_or_fail
from tests.support.card_update import Linked, failed_renewal_with_link, pay_requests, row_counts
from tests.support.scenario import Story

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"


class Served:
    def __init__(self, sqlite_url: str, tmp_path: Path, clock: Any, fake: Any) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        settings = make_settings(sqlite_url, tmp_path, public_url=self.url)
        self.rt = build_runtime(settings, clock=clock, gateway=fake)
        self.fake = fake
        self.next_card: dict[str, Any] = {}
        app = create_app(runtime=self.rt)
        create = fake.create_checkout_setup_session

        def create_pointing_here(**params: Any) -> Any:
            checkout = create(**params)
            checkout["url"] = f"{self.url}/_stripe_checkout/{checkout['id']}"
            return checkout

        fake.create_checkout_setup_session = create_pointing_here

        @app.get("/_stripe_checkout/<cs>")
        def play_checkout(cs: str) -> Any:
            done = fake.complete_checkout_session(cs, **self.next_card)
            return redirect(done["success_url"].replace("{CHECKOUT_SESSION_ID}", cs))

        self.server = make_server("127.0.0.1", port, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.rt.db.dispose()


@pytest.fixture
def served(sqlite_url: str, tmp_path: Path, clock: Any, fake_gateway: Any) -> Iterator[Served]:
    served = Served(sqlite_url, tmp_path, clock, fake_gateway)
    yield served
    served.stop()


@pytest.fixture
def page() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        skip_or_fail(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("playwright is not installed (pip install playwright)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport={"width": 390, "height": 844})  # a phone
        yield context.new_page()
        browser.close()


@pytest.fixture
def linked(served: Served, clock: Any) -> Linked:
    return failed_renewal_with_link(Story(served.rt, served.fake, clock), served.rt)


def _case(rt: Runtime, case_id: int) -> RecoveryCase:
    with rt.db.transaction() as s:
        case = s.get(RecoveryCase, case_id)
        assert case is not None
        return case


def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"card_update_{name}.png"), full_page=True)


def test_update_card_in_a_browser_pays_the_invoice(
    served: Served, linked: Linked, page: Any
) -> None:
    page.goto(f"{served.url}/update/{linked.token}")
    text = page.inner_text("body")
    _shot(page, "1_page")
    assert served.rt.rules.business.name in text
    assert "Visa ending in 4242" in text
    assert "20.00" in text
    assert "kim@example.com" not in text and "Kim" not in text
    assert page.locator("button").count() == 1
    served.next_card = {"brand": "mastercard", "last4": "4444"}
    page.click("button")
    page.wait_for_url("**/done?session_id=*")
    _shot(page, "2_paid")
    assert "Thank you" in page.inner_text("body")
    page.reload()  # a refresh of the result page charges nothing more
    assert "Thank you" in page.inner_text("body")
    case = _case(served.rt, linked.case_id)
    assert case.status == CaseStatus.RECOVERED
    assert case.recovered_via == RecoveredVia.CARD_UPDATE_LINK
    assert served.fake.store["invoice"][linked.billing.invoice]["status"] == "paid"
    assert len(pay_requests(served.fake, linked.case_id)) == 1
    assert Story(served.rt, served.fake, served.rt.clock).pending(linked.case_id) == []  # type: ignore[arg-type]


def test_declined_new_card_offers_another_card(served: Served, linked: Linked, page: Any) -> None:
    page.goto(f"{served.url}/update/{linked.token}")
    served.next_card = {"declines_with": "insufficient_funds"}
    page.click("button")
    page.wait_for_url("**/done?session_id=*")
    _shot(page, "3_declined")
    assert "Try another card" in page.inner_text("body")
    assert _case(served.rt, linked.case_id).status != CaseStatus.RECOVERED
    served.next_card = {}
    page.click("button")
    page.wait_for_url("**/done?session_id=*")
    assert "Thank you" in page.inner_text("body")
    assert _case(served.rt, linked.case_id).recovered_via == RecoveredVia.CARD_UPDATE_LINK


def test_tampered_link_shows_a_friendly_404(served: Served, linked: Linked, page: Any) -> None:
    before = row_counts(served.rt)
    response = page.goto(f"{served.url}/update/{'x' * 43}")
    assert response is not None and response.status == 404
    _shot(page, "4_unknown")
    assert "doesn't work" in page.inner_text("body")
    assert row_counts(served.rt) == before
