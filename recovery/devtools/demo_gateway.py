"""The demo's Stripe: the in-repo fake, made safe for a threaded server, with its hosted pages
(Checkout, the hosted invoice page) served by the demo itself, and a pump that sends its events
to the service's own webhook endpoint, signed, as Stripe would.

localstripe has no Checkout, pause, coupons or prices, all of which the demo shows; the fake
has them (recovery/adapters/stripe_fake/).
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from recovery.adapters.clock import Clock
from recovery.adapters.stripe.protocol import StripeDict
from recovery.adapters.stripe_fake import FakeStripeGateway
from recovery.domain.signature import sign

log = logging.getLogger(__name__)


class DemoStripeGateway(FakeStripeGateway):
    """The fake behind one lock (web requests, the worker and the pump share it), with the
    Checkout and hosted-invoice URLs pointing at the demo's stand-in pages under `pages_url`."""

    def __init__(self, *, clock: Clock, pages_url: str) -> None:
        super().__init__(clock=clock)
        self.pages_url = pages_url.rstrip("/")
        self.lock = threading.RLock()
        # Every public method takes the lock: the fake's calls read and write shared dicts.
        for name, _ in inspect.getmembers(FakeStripeGateway, inspect.isfunction):
            if not name.startswith("_"):
                setattr(self, name, self._locked(getattr(self, name)))

    def _locked(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            with self.lock:
                return method(*args, **kwargs)

        call.__name__ = method.__name__
        return call

    def checkout_url(self, session_id: str) -> str:
        return f"{self.pages_url}/demo/checkout/{session_id}"

    def invoice_url(self, invoice_id: str) -> str:
        return f"{self.pages_url}/demo/invoice/{invoice_id}"

    def create_checkout_setup_session(self, **params: Any) -> StripeDict:
        session = super().create_checkout_setup_session(**params)
        # A replay answers with the first response as cached, so the URL is set on every answer.
        session["url"] = self.checkout_url(session["id"])
        self.store["checkout.session"][session["id"]]["url"] = session["url"]
        return session

    def add_invoice(self, customer_id: str, **params: Any) -> StripeDict:
        invoice = super().add_invoice(customer_id, **params)
        invoice["hosted_invoice_url"] = self.invoice_url(invoice["id"])
        self.store["invoice"][invoice["id"]]["hosted_invoice_url"] = invoice["hosted_invoice_url"]
        return invoice

    def events_since(self, index: int) -> list[StripeDict]:
        with self.lock:
            return list(self.events[index:])


class WebhookPump(threading.Thread):
    """Delivers the fake's new events to `POST /webhooks/stripe` over loopback HTTP, in order,
    each signed with the endpoint's secret. A refused or failed delivery is tried again (the
    server may still be starting), as Stripe retries."""

    def __init__(
        self,
        gateway: DemoStripeGateway,
        url: str,
        secret: str,
        *,
        start_at: int = 0,
        interval: float = 0.2,
    ) -> None:
        super().__init__(name="demo-webhook-pump", daemon=True)
        self.gateway, self.url, self.secret = gateway, url, secret
        self.sent = start_at
        self.interval = interval
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def deliver(self, event: StripeDict) -> bool:
        body = json.dumps(event).encode()
        stamp = int(time.time())
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Stripe-Signature": f"t={stamp},v1={sign(body, self.secret, stamp)}",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return bool(200 <= response.status < 300)
        except (urllib.error.URLError, OSError) as exc:
            log.debug("webhook delivery of %s failed: %s", event["id"], exc)
            return False

    def pump_once(self) -> int:
        delivered = 0
        for event in self.gateway.events_since(self.sent):
            if not self.deliver(event):
                break
            self.sent += 1
            delivered += 1
        return delivered

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.pump_once()
            except Exception:  # the pump must outlive any one bad delivery
                log.exception("demo webhook pump failed")
            self._stop.wait(self.interval)
