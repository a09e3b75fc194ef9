"""Checkout in setup mode and its SetupIntent: the hosted page where a subscriber saves a new
card. Completing a session saves a card, so this part builds on the customers'."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from recovery.adapters.stripe.protocol import StripeDict
from recovery.adapters.stripe_fake.customers import FakeCustomers
from recovery.adapters.stripe_fake.store import clone


class FakeCheckout(FakeCustomers):
    # ---- checkout, setup intents, payment methods -----------------------------------------------

    def create_checkout_setup_session(
        self,
        *,
        customer_id: str,
        success_url: str,
        cancel_url: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
        locale: str | None = None,
    ) -> StripeDict:
        params = {
            "customer_id": customer_id,
            "success_url": success_url,
            "cancel_url": cancel_url,
            "metadata": dict(metadata),
            "locale": locale,
        }

        def effect() -> StripeDict:
            self._get("customer", customer_id, "customer")
            now = self._now()
            intent = self.put(
                {
                    "id": self.new_id("seti"),
                    "object": "setup_intent",
                    "application": None,
                    "automatic_payment_methods": None,
                    "cancellation_reason": None,
                    "client_secret": None,
                    "created": now,
                    "customer": customer_id,
                    "description": None,
                    "flow_directions": None,
                    "last_setup_error": None,
                    "latest_attempt": None,
                    "livemode": self._livemode,
                    "mandate": None,
                    "metadata": dict(metadata),
                    "next_action": None,
                    "on_behalf_of": None,
                    "payment_method": None,
                    "payment_method_options": {"card": {"request_three_d_secure": "automatic"}},
                    "payment_method_types": ["card"],
                    "single_use_mandate": None,
                    "status": "requires_payment_method",
                    "usage": "off_session",
                }
            )
            self.store["setup_intent"][intent["id"]]["client_secret"] = f"{intent['id']}_secret"
            sid = self.new_id("cs_test")
            return self.put(
                {
                    "id": sid,
                    "object": "checkout.session",
                    "cancel_url": cancel_url,
                    "client_reference_id": None,
                    "created": now,
                    "currency": None,
                    "customer": customer_id,
                    "customer_email": None,
                    "expires_at": now + 86400,
                    "invoice": None,
                    "livemode": self._livemode,
                    "locale": locale,
                    "metadata": dict(metadata),
                    "mode": "setup",
                    "payment_intent": None,
                    "payment_method_types": ["card"],
                    "payment_status": "no_payment_required",
                    "setup_intent": intent["id"],
                    "status": "open",
                    "subscription": None,
                    "success_url": success_url,
                    "url": f"https://checkout.stripe.com/c/pay/{sid}",
                }
            )

        return self._write("create_checkout_setup_session", params, idempotency_key, effect)

    def complete_checkout_session(self, id: str, **card: Any) -> StripeDict:
        """Play the customer: save a new card (see `add_payment_method`), complete the session."""
        session = self._get("checkout.session", id)
        pm = self.add_payment_method(session["customer"], **card)
        intent = self.store["setup_intent"][session["setup_intent"]]
        intent.update(status="succeeded", payment_method=pm["id"])
        session.update(status="complete")
        self._emit("payment_method.attached", pm)
        self._emit("setup_intent.succeeded", {**intent, "payment_method": pm})
        self._emit("checkout.session.completed", session)
        return clone(session)

    def _expanded_setup_intent(self, id: str) -> StripeDict:
        intent = clone(self._get("setup_intent", id))
        if intent["payment_method"]:
            intent["payment_method"] = self._get("payment_method", intent["payment_method"])
        return intent

    def retrieve_checkout_session(self, id: str) -> StripeDict:
        def fetch() -> StripeDict:
            session = clone(self._get("checkout.session", id))
            if session["setup_intent"]:
                session["setup_intent"] = self._expanded_setup_intent(session["setup_intent"])
            return session

        return self._read("retrieve_checkout_session", {"id": id}, fetch)

    def retrieve_setup_intent(self, id: str) -> StripeDict:
        return self._read(
            "retrieve_setup_intent", {"id": id}, lambda: self._expanded_setup_intent(id)
        )
