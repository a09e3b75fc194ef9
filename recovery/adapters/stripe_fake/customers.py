"""Customers and their card PaymentMethods: seeding, reads, and the invoice default card."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from recovery.adapters.stripe.protocol import StripeDict
from recovery.adapters.stripe_fake.store import FakeStore, _CardBehaviour, _nulls


class FakeCustomers(FakeStore):
    def add_customer(
        self,
        id: str | None = None,
        *,
        email: str | None = None,
        name: str | None = None,
        phone: str | None = None,
        country: str | None = None,
        preferred_locales: list[str] | None = None,
        default_payment_method: str | None = None,
        metadata: Mapping[str, str] | None = None,
        created: int | None = None,
    ) -> StripeDict:
        cid = id or self.new_id("cus")
        address = {**_nulls("city", "line1", "line2", "postal_code", "state"), "country": country}
        settings = {**_nulls("custom_fields", "footer", "rendering_options")}
        return self.put(
            {
                **self._base("customer", cid, created),
                **_nulls("currency", "default_source", "description", "discount", "shipping"),
                **_nulls("test_clock"),
                "address": address if country else None,
                "balance": 0,
                "delinquent": False,
                "email": email,
                "invoice_prefix": cid[-8:].upper(),
                "invoice_settings": {**settings, "default_payment_method": default_payment_method},
                "metadata": dict(metadata or {}),
                "name": name,
                "next_invoice_sequence": 1,
                "phone": phone,
                "preferred_locales": list(preferred_locales or []),
                "tax_exempt": "none",
            }
        )

    def add_payment_method(
        self,
        customer_id: str | None,
        *,
        id: str | None = None,
        brand: str = "visa",
        last4: str = "4242",
        exp_month: int = 12,
        exp_year: int = 2030,
        funding: str = "credit",
        country: str = "US",
        fingerprint: str | None = None,
        declines_with: str | None = None,
        requires_authentication: bool = False,
        created: int | None = None,
    ) -> StripeDict:
        """A card PaymentMethod. `declines_with` (a decline code) makes every charge on it fail;
        `requires_authentication` makes every off-session charge need 3-D Secure."""
        pid = id or self.new_id("pm")
        self._cards[pid] = _CardBehaviour(declines_with, requires_authentication)
        checks = {**_nulls("address_line1_check", "address_postal_code_check"), "cvc_check": "pass"}
        card = {
            "brand": brand,
            "checks": checks,
            "country": country,
            "display_brand": brand,
            "exp_month": exp_month,
            "exp_year": exp_year,
            "fingerprint": fingerprint or f"fp{pid[-10:]}",
            "funding": funding,
            "generated_from": None,
            "last4": last4,
            "networks": {"available": [brand], "preferred": None},
            "regulated_status": "unregulated",
            "three_d_secure_usage": {"supported": True},
            "wallet": None,
        }
        return self.put(
            {
                **self._base("payment_method", pid, created),
                "allow_redisplay": "unspecified",
                "billing_details": _nulls("address", "email", "name", "phone", "tax_id"),
                "card": card,
                "customer": customer_id,
                "customer_account": None,
                "metadata": {},
                "type": "card",
            }
        )

    # ---- customers ------------------------------------------------------------------------------

    def retrieve_customer(self, id: str) -> StripeDict:
        return self._read("retrieve_customer", {"id": id}, lambda: self._get("customer", id))

    def update_customer_default_payment_method(
        self, customer_id: str, pm_id: str, *, idempotency_key: str
    ) -> StripeDict:
        def effect() -> StripeDict:
            customer = self._get("customer", customer_id)
            self._attached(pm_id, customer_id, "invoice_settings[default_payment_method]")
            customer["invoice_settings"]["default_payment_method"] = pm_id
            self._emit("customer.updated", customer, idempotency_key)
            return customer

        params = {"customer_id": customer_id, "pm_id": pm_id}
        return self._write(
            "update_customer_default_payment_method", params, idempotency_key, effect
        )

    def retrieve_payment_method(self, id: str) -> StripeDict:
        return self._read(
            "retrieve_payment_method", {"id": id}, lambda: self._get("payment_method", id)
        )

    def list_customer_payment_methods(self, customer_id: str) -> list[StripeDict]:
        def fetch() -> list[StripeDict]:
            self._get("customer", customer_id)
            return self._newest_first("payment_method", lambda pm: pm["customer"] == customer_id)

        return self._read("list_customer_payment_methods", {"customer_id": customer_id}, fetch)

    def iter_customers(self, starting_after: str | None = None) -> Iterator[StripeDict]:
        return self._pages("iter_customers", "customer", {}, lambda o: True, starting_after)
