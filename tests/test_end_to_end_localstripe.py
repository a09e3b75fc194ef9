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
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import stripe
from werkzeug.serving import make_server

from recovery.adapters.clock import SystemClock
from recovery.app import create_app
from recovery.models import Customer, Invoice, StripeEvent, Subscription
from recovery.runtime import Runtime
from recovery.services.registry import build_runtime
from recovery.worker import Worker
from tests.conftest import make_settings
from tests.support.localstripe_server import (
    DEFAULT_SECRET_KEY,
    LocalStripe,
    fail_renewal,
    register_webhook,
    start_localstripe,
)


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
                # woken by each webhook the app answers; the worker's steps make none
                self.changed.wait(min(remaining, 0.25))
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
    runtime = build_runtime(replace(settings, worker_tick_seconds=0.2), clock=SystemClock())
    served = ServedApp(runtime)
    worker = Worker(runtime)  # as in production: a worker beside the web process
    worker.start(blocking=False)
    register_webhook(
        localstripe.base_url,
        f"{served.url}/webhooks/stripe",
        secret,
        webhook_id=f"e2e-{uuid.uuid4().hex[:8]}",
    )
    yield served
    worker.stop()
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
    invoice, status = fail_renewal(client, localstripe.base_url, customer.id, subscription.id)
    assert status == 402

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


def test_failed_renewal_is_recovered_by_our_retry_after_a_card_switch(
    localstripe: LocalStripe, served: ServedApp
) -> None:
    """failure -> case -> retry scheduled -> default card switched -> retry at once succeeds
    -> case recovered, nothing left scheduled. All through localstripe's real webhooks."""
    from sqlalchemy import select

    from recovery.models import ActionStatus, DueAction, RecoveryCase

    client = stripe.StripeClient(
        DEFAULT_SECRET_KEY, base_addresses={"api": localstripe.base_url}, max_network_retries=0
    )
    product = client.v1.products.create({"name": "Pro"})
    plan = client.v1.plans.create(
        {"product": product.id, "amount": 4900, "currency": "usd", "interval": "month"}
    )
    customer = client.v1.customers.create({"email": "grace@example.com"})
    good = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    client.v1.customers.update(
        customer.id, {"invoice_settings": {"default_payment_method": good.id}}
    )
    subscription = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"plan": plan.id}]}
    )
    invoice, _ = fail_renewal(client, localstripe.base_url, customer.id, subscription.id)

    rt = served.runtime

    def retry_planned_later() -> bool:
        # localstripe's webhooks arrive out of order: until the customer.updated that made the
        # bad card the default is in, the case may briefly think the card already changed.
        with rt.db.transaction() as s:
            case = s.scalars(
                select(RecoveryCase).where(RecoveryCase.invoice_id == invoice.id)
            ).one_or_none()
            return (
                case is not None
                and case.status == "retrying"
                and case.next_retry_at is not None
                and case.next_retry_at > rt.clock.now() + timedelta(hours=1)
            )

    assert served.wait_until(retry_planned_later), localstripe.log()[-3000:]

    # The customer puts a good card back as the default: localstripe sends customer.updated.
    client.v1.customers.update(
        customer.id, {"invoice_settings": {"default_payment_method": good.id}}
    )

    def retry_due_now() -> bool:
        with rt.db.transaction() as s:
            case = s.scalars(
                select(RecoveryCase).where(RecoveryCase.invoice_id == invoice.id)
            ).one()
            return case.next_retry_at is not None and case.next_retry_at <= rt.clock.now()

    def recovered() -> bool:
        with rt.db.transaction() as s:
            case = s.scalars(
                select(RecoveryCase).where(RecoveryCase.invoice_id == invoice.id)
            ).one()
            return case.status == "recovered"

    assert served.wait_until(recovered), localstripe.log()[-3000:]
    with rt.db.transaction() as s:
        case = s.scalars(select(RecoveryCase).where(RecoveryCase.invoice_id == invoice.id)).one()
        assert (case.status, case.recovered_via, case.amount_recovered) == (
            "recovered",
            "our_retry",
            4900,
        )
        left = s.scalars(
            select(DueAction).where(
                DueAction.subject == f"case:{case.id}", DueAction.status == ActionStatus.PENDING
            )
        ).all()
        assert left == []
    assert client.v1.invoices.retrieve(invoice.id).status == "paid"
