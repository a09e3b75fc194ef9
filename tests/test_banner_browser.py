"""/embed/v1/banner.js in headless Chromium on an example host page - another origin, with a
strict nonce-based Content-Security-Policy: the banner shows for a past-due customer (in their
language, accessible, dismissible) and nothing for a paid one, a forged or an expired token."""

from __future__ import annotations

import html
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from recovery.adapters.clock import FrozenClock
from recovery.app import create_app
from recovery.domain import embed_token
from recovery.runtime import Runtime
from recovery.services.registry import build_runtime
from recovery.web.embed import BANNER_JS
from tests.conftest import make_settings
from tests.support.browser import Served, chromium, contrast, shot
from tests.support.messaging import with_locales
from tests.support.scenario import Billing, Story

SECRET = "embed-secret-" + "4f1c9a7e2b8d" * 3


class HostApp:
    """The business's own page, on its own origin, embedding the banner under a strict CSP."""

    def __init__(self, recovery_url: str) -> None:
        self.recovery_url = recovery_url
        self.tokens: dict[str, str] = {}  # path -> token
        host = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                token = host.tokens.get(self.path.split("?")[0], "")
                nonce = secrets.token_urlsafe(16)
                page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Acme account</title></head>
<body><main><h1>Your account</h1><p>Plan: Pro</p></main>
<script>document.title = "inline script ran";</script>
<script nonce="{nonce}" src="{host.recovery_url}/embed/v1/banner.js"
        data-token="{html.escape(token)}" async></script>
</body></html>""".encode()
                csp = (
                    f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
                    f"connect-src {host.recovery_url}; img-src 'none'; object-src 'none'; "
                    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
                )
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Security-Policy", csp)
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def page_for(self, name: str, token: str) -> str:
        self.tokens[f"/{name}"] = token
        return f"{self.url}/{name}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def world(
    sqlite_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: Any
) -> Iterator[tuple[Runtime, Story, HostApp]]:
    served = Served()
    settings = make_settings(sqlite_url, tmp_path, public_url=served.url, embed_secret=SECRET)
    rt = build_runtime(settings, clock=clock, gateway=fake_gateway)
    served.serve(create_app(runtime=rt))
    host = HostApp(served.url)
    yield rt, Story(rt, fake_gateway, clock), host
    host.stop()
    served.stop()
    rt.db.dispose()


def token(clock: FrozenClock, customer: str, *, secret: str = SECRET, age: int = 0) -> str:
    return embed_token.mint(secret, customer, int(clock.now().timestamp()) - age)


def open_page(browser: Any, url: str) -> tuple[Any, int, list[str]]:
    """The page after the banner's status call answered; its status; CSP complaints."""
    page = browser.new_page()
    page.set_default_timeout(20_000)
    complaints: list[str] = []
    page.on(
        "console", lambda m: complaints.append(m.text) if "Content Security" in m.text else None
    )
    with page.expect_response(lambda r: "/embed/v1/status" in r.url) as answered:
        page.goto(url)
    response = answered.value
    page.wait_for_selector("script[data-state]", state="attached")  # banner.js has finished
    return page, response.status, complaints


def past_due(story: Story, amount: int = 2900) -> Billing:
    billing = story.customer(amount=amount)
    story.deliver()
    story.stripe_charges(billing.invoice, decline_code="insufficient_funds")
    return billing


def test_banner_for_a_past_due_customer_under_a_strict_csp(
    world: tuple[Runtime, Story, HostApp], clock: FrozenClock
) -> None:
    _rt, story, host = world
    billing = past_due(story)
    url = host.page_for("account", token(clock, billing.customer))
    with chromium() as browser:
        page, status, complaints = open_page(browser, url)
        banner = page.wait_for_selector("[data-recovery-banner]")
        assert status == 200
        assert (
            page.title() == "Acme account"
        )  # the CSP is on: the page's own inline script is blocked
        assert [c for c in complaints if "banner" in c or "inline" not in c] == []
        assert banner.get_attribute("role") == "region"
        assert banner.get_attribute("aria-label") == "Billing notice"
        assert banner.get_attribute("data-recovery-banner") == "past_due"
        text = page.locator("[data-recovery-banner] p")
        assert (
            text.inner_text()
            == "We could not collect your payment of $29.00. Please update your card."
        )
        assert text.get_attribute("role") == "status"
        link = page.get_by_role("link", name="Update card")
        href = link.get_attribute("href")
        assert href is not None and href.startswith(f"{host.recovery_url}/update/")
        # WCAG AA: 4.5:1 for the text and the button.
        colors = page.evaluate(
            """() => { const b = document.querySelector('[data-recovery-banner]');
                       const a = b.querySelector('a'); const s = getComputedStyle;
                       return [s(b.querySelector('p')).color, s(b).backgroundColor,
                               s(a).color, s(a).backgroundColor]; }"""
        )
        assert contrast(colors[0], colors[1]) >= 4.5
        assert contrast(colors[2], colors[3]) >= 4.5
        path = shot(page, "banner_past_due", folder="banner")
        assert path.exists()
        # The link opens the card-update page for this customer.
        assert page.request.get(href).status == 200
        # Keyboard: the link, then the close button; Enter on it dismisses.
        page.get_by_role("button", name="Dismiss").focus()
        page.keyboard.press("Enter")
        assert page.query_selector("[data-recovery-banner]") is None
        page.reload()
        page.wait_for_selector("script[data-state]", state="attached")
        assert page.query_selector("[data-recovery-banner]") is None  # stays dismissed


def test_no_banner_for_a_paid_customer_a_forged_or_an_expired_token(
    world: tuple[Runtime, Story, HostApp], clock: FrozenClock
) -> None:
    _rt, story, host = world
    paid = story.customer()
    story.deliver()
    story.stripe_charges(paid.invoice)
    owing = past_due(story)
    pages = {
        "paid": (host.page_for("paid", token(clock, paid.customer)), 200),
        "forged": (host.page_for("forged", token(clock, owing.customer, secret="x" * 40)), 401),
        "expired": (host.page_for("expired", token(clock, owing.customer, age=601)), 401),
        "mangled": (host.page_for("mangled", token(clock, owing.customer)[:-1] + "0"), 401),
    }
    with chromium() as browser:
        for name, (url, expected) in pages.items():
            page, status, _ = open_page(browser, url)
            assert status == expected, name
            assert page.query_selector("[data-recovery-banner]") is None, name
            page.close()
        # The control: the same customer's fresh token does show it.
        page, status, _ = open_page(browser, host.page_for("fresh", token(clock, owing.customer)))
        assert status == 200 and page.wait_for_selector("[data-recovery-banner]")


def test_the_banner_speaks_the_customers_language(
    world: tuple[Runtime, Story, HostApp], clock: FrozenClock
) -> None:
    _rt, story, host = world
    billing = story.customer(amount=1500)
    story.deliver()
    with_locales(story, billing, ["fr"])
    story.stripe_charges(billing.invoice, decline_code="generic_decline")
    with chromium() as browser:
        page, _, _ = open_page(browser, host.page_for("fr", token(clock, billing.customer)))
        banner = page.wait_for_selector("[data-recovery-banner]")
        assert banner.get_attribute("lang") == "fr"
        assert banner.get_attribute("aria-label") == "Avis de facturation"
        assert (
            page.locator("[data-recovery-banner] p")
            .inner_text()
            .startswith("Nous n'avons pas pu encaisser votre paiement de 15,00")
        )
        assert page.get_by_role("button", name="Fermer").is_visible()
        shot(page, "banner_fr", folder="banner")


def test_the_script_is_small_cacheable_and_self_contained(client: Any) -> None:
    assert len(BANNER_JS) < 5 * 1024
    response = client.get("/embed/v1/banner.js")
    assert response.status_code == 200 and response.data == BANNER_JS
    assert response.mimetype == "text/javascript"
    assert "max-age" in response.headers["Cache-Control"]
    source = BANNER_JS.decode()
    for outside in ("import ", "http://", "https://", "innerHTML", "eval(", 'setAttribute("style'):
        assert outside not in source.split("*/", 1)[1], outside  # after the header comment


def test_status_without_a_secret_configured_is_404(client: Any) -> None:
    # The test app has no RECOVERY_EMBED_SECRET: no token can be right.
    response = client.get("/embed/v1/status?token=v1.cus_x.1.abc")
    assert response.status_code == 404
    assert response.headers["Access-Control-Allow-Origin"] == "*"
