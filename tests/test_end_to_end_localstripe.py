"""End to end over real HTTP: localstripe's signed webhooks reach the running service.

localstripe plays Stripe: a subscription renews, the card is declined, and its signed
`invoice.payment_failed` (2017-08-15 shapes, delivered out of order, about a second late) must
land in our mirror through `POST /webhooks/stripe` on a real socket.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import stripe
from werkzeug.serving import make_server

from recovery import create_app
from recovery.adapters.clock import SystemClock
from recovery.models import Customer, Invoice, StripeEvent, Subscription
from recovery.runtime import Runtime
from tests.conftest import make_settings
from tests.support.localstripe_server import (
    DEFAULT_SECRET_KEY,
    LocalStripe,
    authenticate_payment_intent,
    register_webhook,
    start_localstripe,
)

CARD_3DS_THEN_DECLINE = "4000008260003178"


@pytest.fixture(scope="module")
def localstripe() -> Iterator[LocalStripe]:
    server = start_localstripe()
    yield server
    server.stop()


class ServedApp:
    """The real app on a real loopback port; notifies waiters after every request."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.changed = threading.Condition()
        app = create_app(runtime=runtime)
        inner = app.wsgi_app

        def notifying(environ: Any, start_response: Any) -> Any:
            try:
                return inner(environ, start_response)
            finally:
                with self.changed:
                    self.changed.notify_all()

        app.wsgi_app = notifying  # type: ignore[method-assign]
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_until(self, check: Callable[[], bool], timeout: float = 15) -> bool:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not check():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.changed.wait(remaining)  # woken by each webhook the app answers
        return True

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def served(database_url: str, tmp_path: Path, localstripe: LocalStripe) -> Iterator[ServedApp]:
    secret = "whsec_" + uuid.uuid4().hex
    settings = make_settings(
        database_url,
        tmp_path,
        stripe_webhook_secrets=(secret,),
        stripe_api_key=DEFAULT_SECRET_KEY,
        stripe_api_base=localstripe.base_url,
    )
    # Real time: localstripe signs with the wall clock, and the 300 s tolerance applies.
    runtime = Runtime.build(settings, clock=SystemClock())
    served = ServedApp(runtime)
    register_webhook(
        localstripe.base_url,
        f"{served.url}/webhooks/stripe",
        secret,
        webhook_id=f"e2e-{uuid.uuid4().hex[:8]}",
    )
    yield served
    served.stop()
    runtime.db.dispose()


def test_failed_renewal_reaches_the_mirror(localstripe: LocalStripe, served: ServedApp) -> None:
    client = stripe.StripeClient(
        DEFAULT_SECRET_KEY, base_addresses={"api": localstripe.base_url}, max_network_retries=0
    )
    product = client.v1.products.create({"name": "Pro"})
    plan = client.v1.plans.create(
        {"product": product.id, "amount": 2000, "currency": "usd", "interval": "month"}
    )
    customer = client.v1.customers.create({"email": "ada@example.com", "name": "Ada"})
    good = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    client.v1.customers.update(
        customer.id, {"invoice_settings": {"default_payment_method": good.id}}
    )
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"plan": plan.id}]}
    )
    bad = client.v1.payment_methods.create(
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
    client.v1.payment_methods.attach(bad.id, {"customer": customer.id})
    client.v1.customers.update(
        customer.id, {"invoice_settings": {"default_payment_method": bad.id}}
    )
    invoice = client.v1.invoices.pay(
        client.v1.invoices.create({"customer": customer.id, "subscription": subscription.id}).id
    )
    intent = client.v1.payment_intents.retrieve(invoice.to_dict()["payment_intent"])
    assert (
        authenticate_payment_intent(localstripe.base_url, intent.id, intent.client_secret or "")
        == 402
    )

    rt = served.runtime

    def mirrored() -> bool:
        with rt.db.transaction() as s:
            inv = s.get(Invoice, invoice.id)
            cus = s.get(Customer, customer.id)
            sub = s.get(Subscription, subscription.id)
            return (
                inv is not None
                and inv.attempt_count >= 1
                and inv.status == "open"
                and cus is not None
                and sub is not None
            )

    assert served.wait_until(mirrored), localstripe.log()[-3000:]
    with rt.db.transaction() as s:
        inv = s.get(Invoice, invoice.id)
        assert inv is not None
        assert (inv.customer_id, inv.subscription_id, inv.amount_due, inv.currency) == (
            customer.id,
            subscription.id,
            2000,
            "usd",
        )
        failed = s.query(StripeEvent).filter_by(type="invoice.payment_failed").one()
        assert failed.status == "processed" and failed.api_version == "2017-08-15"
        cus = s.get(Customer, customer.id)
        assert cus is not None and cus.email == "ada@example.com"
