"""The real-parts harness works: PostgreSQL via psycopg 3, localstripe via the official SDK.

The localstripe tests double as the reference recipe for end-to-end tests (see
``docs/testing-parts.md``): how to make a renewal fail with ``invoice.payment_failed`` and how the
customer then recovers.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import stripe
from sqlalchemy import create_engine, inspect, text

from tests.support.localstripe_server import (
    DEFAULT_SECRET_KEY,
    LocalStripe,
    authenticate_payment_intent,
    register_webhook,
    start_localstripe,
    wipe,
)
from tests.support.postgres import PostgresServer, postgres_or_skip

# 3-D Secure required, authentication succeeds, then the charge is declined (card_declined).
CARD_3DS_THEN_DECLINE = "4000008260003178"


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    server = postgres_or_skip(tmp_path_factory)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def localstripe() -> Iterator[LocalStripe]:
    server = start_localstripe()
    yield server
    server.stop()


@pytest.fixture
def client(localstripe: LocalStripe) -> stripe.StripeClient:
    wipe(localstripe.base_url)
    return stripe.StripeClient(
        DEFAULT_SECRET_KEY,
        base_addresses={"api": localstripe.base_url},
        max_network_retries=0,
    )


@pytest.mark.postgres
def test_postgres_answers_through_sqlalchemy_and_psycopg(postgres: PostgresServer) -> None:
    engine = create_engine(postgres.url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("select 1")).scalar_one() == 1
            assert connection.dialect.driver == "psycopg"
            assert connection.execute(text("select current_database()")).scalar_one() == (
                engine.url.database
            )
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_extra_databases_are_isolated_and_start_empty(postgres: PostgresServer) -> None:
    first_url = postgres.create_database("harness_first")
    second_url = postgres.create_database("harness_second")
    first, second = create_engine(first_url), create_engine(second_url)
    try:
        with first.begin() as connection:
            connection.execute(text("create table marker (id int primary key)"))
        assert inspect(first).has_table("marker")
        assert not inspect(second).has_table("marker")
        first.dispose()  # create_database drops with FORCE anyway; this just keeps it tidy
        postgres.create_database("harness_first")  # re-created: empty again
        assert not inspect(create_engine(first_url)).has_table("marker")
    finally:
        first.dispose()
        second.dispose()


@pytest.mark.localstripe
def test_localstripe_creates_a_customer(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create({"email": "ada@example.com"})
    assert customer.id.startswith("cus_")
    assert client.v1.customers.retrieve(customer.id).email == "ada@example.com"


@pytest.mark.localstripe
def test_failed_renewal_then_recovery_recipe(
    localstripe: LocalStripe, client: stripe.StripeClient
) -> None:
    # An active monthly subscription paid by a good card. localstripe has plans, not prices.
    product = client.v1.products.create({"name": "Pro"})
    plan = client.v1.plans.create(
        {"product": product.id, "amount": 2000, "currency": "usd", "interval": "month"}
    )
    customer = client.v1.customers.create({"email": "ada@example.com"})
    good_card = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    client.v1.customers.update(
        customer.id, {"invoice_settings": {"default_payment_method": good_card.id}}
    )
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"plan": plan.id}]}
    )
    assert subscription.status == "active"

    # The card goes bad: the 3-D Secure card becomes the default. (With it as the default from
    # the start, the subscription's first invoice would leave the subscription `incomplete`.)
    bad_card = client.v1.payment_methods.create(
        {
            "type": "card",
            "card": {
                "number": CARD_3DS_THEN_DECLINE,
                "exp_month": 12,
                "exp_year": 2034,
                "cvc": "123",
            },
        }
    )
    client.v1.payment_methods.attach(bad_card.id, {"customer": customer.id})
    client.v1.customers.update(
        customer.id, {"invoice_settings": {"default_payment_method": bad_card.id}}
    )

    # The renewal: a draft invoice for the subscription, then an attempt to pay it. localstripe
    # does not raise here (Stripe would answer 402): the invoice is `open` and its PaymentIntent
    # waits for authentication.
    invoice = client.v1.invoices.create({"customer": customer.id, "subscription": subscription.id})
    assert invoice.status == "draft"
    invoice = client.v1.invoices.pay(invoice.id)
    assert invoice.status == "open"
    intent = client.v1.payment_intents.retrieve(invoice.to_dict()["payment_intent"])
    assert intent.status == "requires_action"

    # The customer passes 3-D Secure, then the bank declines: 402 and invoice.payment_failed.
    status = authenticate_payment_intent(
        localstripe.base_url, intent.id, intent.client_secret or "", success=True
    )
    assert status == 402
    assert client.v1.subscriptions.retrieve(subscription.id).status == "past_due"
    assert client.v1.invoices.retrieve(invoice.id).status == "open"
    failed = client.v1.events.list({"type": "invoice.payment_failed"})
    assert [event.data.object["id"] for event in failed.data] == [invoice.id]
    declined = client.v1.payment_intents.retrieve(intent.id)
    assert declined.last_payment_error is not None
    assert declined.last_payment_error.code == "card_declined"  # localstripe's only code

    # Recovery: a good default card and another attempt at the same invoice.
    client.v1.customers.update(
        customer.id, {"invoice_settings": {"default_payment_method": good_card.id}}
    )
    assert client.v1.invoices.pay(invoice.id).status == "paid"
    assert client.v1.subscriptions.retrieve(subscription.id).status == "active"
    succeeded = client.v1.events.list({"type": "invoice.payment_succeeded", "limit": 100})
    assert invoice.id in [event.data.object["id"] for event in succeeded.data]


class _Inbox(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _InboxHandler)
        self.received: list[tuple[bytes, str]] = []
        self.arrived = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/webhooks/stripe"


class _InboxHandler(BaseHTTPRequestHandler):
    server: _Inbox

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((body, self.headers["Stripe-Signature"]))
        self.server.arrived.set()
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def _wait_for(inbox: _Inbox, object_id: str, timeout: float) -> tuple[bytes, str] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for payload, signature in list(inbox.received):
            if json.loads(payload)["data"]["object"]["id"] == object_id:
                return payload, signature
        inbox.arrived.wait(timeout=0.1)
        inbox.arrived.clear()
    return None


@pytest.mark.localstripe
def test_webhooks_arrive_signed_like_stripe(
    localstripe: LocalStripe, client: stripe.StripeClient
) -> None:
    secret = "whsec_" + uuid.uuid4().hex
    inbox = _Inbox()
    thread = threading.Thread(target=inbox.serve_forever, daemon=True)
    thread.start()
    try:
        # Registrations outlive wipe() and cannot be removed: a unique id, one event type.
        register_webhook(
            localstripe.base_url,
            inbox.url,
            secret,
            webhook_id=f"harness-{uuid.uuid4().hex[:8]}",
            events=["customer.created"],
        )
        started = time.monotonic()
        customer = client.v1.customers.create({"email": "ada@example.com"})
        # Events of the previous second (earlier tests, even wiped data) may arrive too:
        # localstripe reads the registrations when it sends, not when the event happens.
        payload, signature = _wait_for(inbox, customer.id, timeout=10) or (b"", "")
        assert payload, localstripe.log()
        assert time.monotonic() - started >= 0.5  # localstripe sends about a second later
        event = stripe.Webhook.construct_event(payload, signature, secret)
        assert event.type == "customer.created"
        with pytest.raises(stripe.SignatureVerificationError):
            stripe.Webhook.construct_event(payload, signature, "whsec_wrong")
    finally:
        inbox.shutdown()
        inbox.server_close()
