"""GET /api/v1/customers/<id>/billing-status: what the business's app shows its customer, true
for the customer's real state, in their language, with a working login-free link."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from recovery.adapters.clock import FrozenClock
from recovery.models import CardUpdateLink
from recovery.runtime import Runtime
from tests.conftest import API_KEY
from tests.support.messaging import with_locales
from tests.support.scenario import Story

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def story(runtime: Runtime, fake_gateway: Any, clock: FrozenClock) -> Story:
    return Story(runtime, fake_gateway, clock)


def status(client: Any, customer: str, **query: str) -> dict[str, Any]:
    response = client.get(
        f"/api/v1/customers/{customer}/billing-status", headers=AUTH, query_string=query
    )
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def links(runtime: Runtime) -> int:
    with runtime.db.transaction() as s:
        return int(s.scalar(select(func.count()).select_from(CardUpdateLink)) or 0)


def test_a_failed_payment_is_past_due_with_a_working_link(
    story: Story, client: Any, runtime: Runtime, clock: FrozenClock
) -> None:
    billing = story.customer(amount=2000)
    story.deliver()
    assert status(client, billing.customer) == {
        "customer": billing.customer,
        "state": "ok",
        "amount_due": None,
        "currency": None,
        "update_url": None,
        "message": None,
        "locale": "en",
    }
    story.stripe_charges(billing.invoice, decline_code="insufficient_funds")
    body = status(client, billing.customer)
    assert body["state"] == "past_due"
    assert (body["amount_due"], body["currency"]) == (2000, "usd")
    assert (
        body["message"] == "We could not collect your payment of $20.00. Please update your card."
    )
    url = body["update_url"]
    assert url.startswith("http://recovery.test/update/")
    page = client.get(url.removeprefix("http://recovery.test"))
    assert page.status_code == 200 and "20.00" in page.get_data(as_text=True)

    # Asked again today: the same link, no new row; tomorrow a fresh one.
    before = links(runtime)
    assert status(client, billing.customer)["update_url"] == url
    assert links(runtime) == before
    clock.advance(timedelta(days=1))
    assert status(client, billing.customer)["update_url"] != url

    # Paid: ok again, and the link given out no longer opens the page.
    story.fake.pay_invoice(billing.invoice, idempotency_key="customer-paid")
    story.deliver()
    assert status(client, billing.customer)["state"] == "ok"
    assert client.get(url.removeprefix("http://recovery.test")).status_code == 410


def test_a_payment_to_confirm_links_to_stripes_invoice_page(story: Story, client: Any) -> None:
    billing = story.customer(amount=4500)
    story.deliver()
    story.fake.require_authentication(billing.invoice)
    story.stripe_charges(billing.invoice)
    body = status(client, billing.customer)
    assert body["state"] == "action_required", body
    assert body["update_url"] == story.fake.retrieve_invoice(billing.invoice)["hosted_invoice_url"]
    assert body["message"] == "Your bank needs you to confirm your payment of $45.00."


def test_canceling_and_paused(story: Story, client: Any) -> None:
    billing = story.customer()
    story.deliver()
    story.fake.pause_subscription(billing.subscription, behavior="void", idempotency_key="p1")
    story.deliver()
    paused = status(client, billing.customer)
    assert (paused["state"], paused["message"]) == ("paused", "Your subscription is paused.")
    story.fake.resume_subscription(billing.subscription, idempotency_key="r1")
    story.fake.cancel_subscription(billing.subscription, at_period_end=True, idempotency_key="c1")
    story.deliver()
    ending = status(client, billing.customer)
    assert ending["state"] == "canceling"
    assert (
        ending["message"].startswith("Your subscription ends on ") and ending["update_url"] is None
    )


def test_the_customers_language_or_the_one_asked_for(story: Story, client: Any) -> None:
    billing = story.customer(amount=1200)
    story.deliver()
    with_locales(story, billing, ["de-DE"])
    story.stripe_charges(billing.invoice, decline_code="generic_decline")
    german = status(client, billing.customer)
    assert german["locale"] == "de"
    assert german["message"] == (
        "Wir konnten Ihre Zahlung über 12,00\xa0$ nicht einziehen. "
        "Bitte aktualisieren Sie Ihre Karte."
    )
    assert status(client, billing.customer, locale="pt-BR")["message"].startswith(
        "Não conseguimos cobrar seu pagamento de US$"
    )


def test_a_key_is_required_and_unknown_customers_are_404(client: Any) -> None:
    assert client.get("/api/v1/customers/cus_x/billing-status").status_code == 401
    wrong = {"Authorization": "Bearer not-a-key-at-all"}
    assert client.get("/api/v1/customers/cus_x/billing-status", headers=wrong).status_code == 401
    missing = client.get("/api/v1/customers/cus_nobody/billing-status", headers=AUTH)
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"
    too_long = client.get(f"/api/v1/customers/cus_{'x' * 300}/billing-status", headers=AUTH)
    assert too_long.status_code == 404
    bad_locale = client.get(
        "/api/v1/customers/cus_x/billing-status?locale=" + "x" * 40, headers=AUTH
    )
    assert bad_locale.status_code == 400
