"""An annual-term offer end to end against localstripe through the real SDK gateway: the daily
job, the email into aiosmtpd, the page with localstripe's invoice preview, one click (twice)
and a subscription really switched to the yearly plan - with one charge.

localstripe has plans, not prices, and no `proration_behavior` (docs/testing-parts.md
#what-localstripe-lacks). Stripe accepts a plan id wherever a price id goes, so the test gives
the gateway an HTTP client that only renames `[price]` to `[plan]` and drops
`proration_behavior` on the way to localstripe; every other byte is the gateway's own.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
import stripe
from sqlalchemy import select

from recovery.adapters.clock import SystemClock
from recovery.adapters.stripe.protocol import PINNED_API_VERSION
from recovery.adapters.stripe.sdk import StripeSdkGateway
from recovery.app import create_app
from recovery.models import TermOffer
from recovery.services.events.inbox import receive_events
from recovery.services.operations import jobs
from recovery.services.registry import build_runtime
from recovery.worker import Worker
from tests.conftest import make_settings
from tests.support.localstripe_server import DEFAULT_SECRET_KEY, LocalStripe, start_localstripe
from tests.support.outreach import body, token_in
from tests.support.smtp_sink import smtp_sink

pytestmark = pytest.mark.localstripe


class PlansForPrices(stripe.RequestsClient):
    """localstripe's dialect: `/v1/prices/<id>` is `/v1/plans/<id>`, `...[price]=` becomes
    `...[plan]=`, and proration_behavior is left out (localstripe always prorates by crediting
    the last invoice)."""

    def request(
        self, method: str, url: str, headers: Mapping[str, str] | None, post_data: Any = None
    ) -> Any:
        url = url.replace("/v1/prices/", "/v1/plans/")
        if post_data:
            pairs = [
                (re.sub(r"\[price\]$", "[plan]", key), value)
                for key, value in parse_qsl(post_data, keep_blank_values=True)
                if not key.endswith("proration_behavior")
            ]
            post_data = urlencode(pairs)
        return super().request(method, url, headers, post_data)


@pytest.fixture(scope="module")
def localstripe() -> Iterator[LocalStripe]:
    server = start_localstripe()
    yield server
    server.stop()


def _event(kind: str, obj: dict[str, Any], n: int) -> bytes:
    return json.dumps(
        {
            "id": f"evt_ls_outreach_{n}_{time.time_ns()}",
            "object": "event",
            "api_version": PINNED_API_VERSION,
            "created": int(time.time()),
            "data": {"object": obj},
            "livemode": False,
            "pending_webhooks": 0,
            "request": {"id": None, "idempotency_key": None},
            "type": kind,
        }
    ).encode()


def test_an_annual_offer_switches_a_localstripe_subscription_once(
    localstripe: LocalStripe, sqlite_url: str, tmp_path: Path
) -> None:
    client = stripe.StripeClient(
        DEFAULT_SECRET_KEY, base_addresses={"api": localstripe.base_url}, max_network_retries=0
    )
    product = client.v1.products.create({"name": "Pro"})
    monthly = client.v1.plans.create(
        {"product": product.id, "amount": 2000, "currency": "usd", "interval": "month"}
    )
    yearly = client.v1.plans.create(
        {"product": product.id, "amount": 20000, "currency": "usd", "interval": "year"}
    )
    customer = client.v1.customers.create({"email": "ada@example.com", "name": "Ada Byron"})
    card = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    client.v1.customers.update(
        customer.id, {"invoice_settings": {"default_payment_method": card.id}}
    )
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"plan": monthly.id}]}
    )
    assert subscription.status == "active"

    rules = tmp_path / "rules.toml"
    rules.write_text(
        "[term_offers]\nenabled = true\n"
        f'prices = [ {{ from = "{monthly.id}", to = "{yearly.id}" }} ]\n'
    )
    gateway = StripeSdkGateway(
        DEFAULT_SECRET_KEY, api_base=localstripe.base_url, http_client=PlansForPrices()
    )
    with smtp_sink() as sink:
        settings = make_settings(sqlite_url, tmp_path, rules_path=rules, smtp_url=sink.url)
        rt = build_runtime(settings, clock=SystemClock(), gateway=gateway)
        try:
            # the mirror learns the customer and subscription as from their webhooks
            receive_events(
                rt.db,
                [
                    _event("customer.created", gateway.retrieve_customer(customer.id), 1),
                    _event(
                        "customer.subscription.created",
                        gateway.retrieve_subscription(subscription.id),
                        2,
                    ),
                ],
                rt.processing_context,
                rt.clock,
            )
            jobs.run_now(rt, "term_offers")
            Worker(rt, worker_id="ls").run_until_idle()
            [mail] = sink.messages
            assert mail["Subject"] == "Switch Acme to yearly billing?"
            assert "Hi Ada," in body(mail)
            token = token_in(mail, "annual")

            app = create_app(runtime=rt)
            app.config["TESTING"] = True
            web = app.test_client()
            page = web.get(f"/annual/{token}").get_data(as_text=True)
            assert "$20.00 a month" in page and "$200.00 a year" in page
            # localstripe's preview: the year less a credit for the month already paid
            assert "$180.00 will be charged today" in page
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
            assert csrf is not None
            for _click in range(2):
                done = web.post(f"/annual/{token}", data={"csrf_token": csrf.group(1)})
                assert "You're on yearly billing" in done.get_data(as_text=True)
                assert "$180.00 was charged" in done.get_data(as_text=True)

            switched = client.v1.subscriptions.retrieve(subscription.id)
            assert switched["items"]["data"][0]["plan"]["id"] == yearly.id
            invoices = client.v1.invoices.list({"customer": customer.id}).data
            yearly_charges = [i for i in invoices if i.status == "paid" and i.total == 18000]
            assert len(yearly_charges) == 1  # two clicks, one charge
            with rt.db.transaction() as s:
                offer = s.scalars(select(TermOffer)).one()
                assert (offer.status, offer.annual_amount) == ("accepted", 20000)
        finally:
            rt.db.dispose()
