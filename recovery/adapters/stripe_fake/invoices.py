"""Invoices: seeding (a renewal for a subscription's price), reads, and the writes that are
not a payment (auto-advance, metadata, marking uncollectible)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from recovery.adapters.stripe.errors import InvalidRequest
from recovery.adapters.stripe.protocol import StripeDict
from recovery.adapters.stripe_fake.store import FakeStore, _nulls


class FakeInvoices(FakeStore):
    def add_invoice(
        self,
        customer_id: str,
        *,
        subscription_id: str | None = None,
        id: str | None = None,
        amount_due: int | None = None,
        currency: str | None = None,
        status: str = "open",
        attempt_count: int = 0,
        next_payment_attempt: int | None = None,
        auto_advance: bool | None = None,
        created: int | None = None,
    ) -> StripeDict:
        """An invoice; with a subscription, a renewal for its first item's price."""
        sub = self._get("subscription", subscription_id) if subscription_id else None
        item = sub["items"]["data"][0] if sub else None
        iid = id or self.new_id("in")
        now = self._now() if created is None else created
        if amount_due is None:
            amount_due = item["price"]["unit_amount"] * item["quantity"] if item else 1000
        currency = currency or (sub["currency"] if sub else "usd")
        start, end = (
            (item["current_period_start"], item["current_period_end"]) if item else (now, now)
        )
        customer = self.store["customer"].get(customer_id, {})
        paid, draft = status == "paid", status == "draft"
        line: StripeDict = {
            **self._base("line_item", self.new_id("il"), None),
            "amount": amount_due,
            "currency": currency,
            "description": None,
            "discount_amounts": [],
            "discountable": True,
            "discounts": [],
            "invoice": iid,
            "metadata": {},
            "parent": None,
            "period": {"end": end, "start": start},
            "pretax_credit_amounts": [],
            "pricing": {"type": "price_details", "unit_amount_decimal": str(amount_due)},
            "quantity": item["quantity"] if item else 1,
            "subtotal": amount_due,
            "taxes": [],
        }
        del line["created"]
        if item:
            details: StripeDict = {"invoice_item": None, "proration": False}
            details["proration_details"] = None
            details |= {"subscription": subscription_id, "subscription_item": item["id"]}
            line["parent"] = {
                "invoice_item_details": None,
                "subscription_item_details": details,
                "type": "subscription_item_details",
            }
            line["pricing"]["price_details"] = {
                "price": item["price"]["id"],
                "product": item["price"]["product"],
            }
        parent = None
        if subscription_id:  # since 2025-03-31 the subscription is named here, not top-level
            parent = {
                "quote_details": None,
                "subscription_details": {"metadata": {}, "subscription": subscription_id},
                "type": "subscription_details",
            }
        invoice = self.put(
            {
                **self._base("invoice", iid, now),
                **_nulls("account_name", "application", "default_payment_method", "description"),
                **_nulls("default_source", "due_date", "last_finalization_error", "on_behalf_of"),
                **_nulls("receipt_number", "statement_descriptor", "test_clock"),
                "account_country": "US",
                "amount_due": amount_due,
                "amount_overpaid": 0,
                "amount_paid": amount_due if paid else 0,
                "amount_remaining": 0 if paid else amount_due,
                "amount_shipping": 0,
                "attempt_count": attempt_count,
                "attempted": attempt_count > 0 or paid,
                "auto_advance": status in ("draft", "open")
                if auto_advance is None
                else auto_advance,
                "automatic_tax": {"enabled": False, "liability": None, "status": None},
                "billing_reason": "subscription_cycle" if sub else "manual",
                "collection_method": "charge_automatically",
                "currency": currency,
                "customer": customer_id,
                "customer_email": customer.get("email"),
                "customer_name": customer.get("name"),
                "discounts": [],
                "effective_at": None if draft else now,
                "ending_balance": None if draft else 0,
                "hosted_invoice_url": f"https://invoice.stripe.com/i/acct_fake/test_{iid}",
                "invoice_pdf": f"https://pay.stripe.com/invoice/acct_fake/test_{iid}/pdf",
                "issuer": {"type": "self"},
                "lines": {
                    "object": "list",
                    "data": [line],
                    "has_more": False,
                    "url": f"/v1/invoices/{iid}/lines",
                },
                "metadata": {},
                "next_payment_attempt": next_payment_attempt,
                "number": None if draft else f"{iid[-8:].upper()}-0001",
                "parent": parent,
                "payment_settings": _nulls(
                    "default_mandate", "payment_method_options", "payment_method_types"
                ),
                "period_end": end,
                "period_start": start,
                "starting_balance": 0,
                "status": status,
                "status_transitions": {
                    "finalized_at": None if draft else now,
                    "marked_uncollectible_at": now if status == "uncollectible" else None,
                    "paid_at": now if paid else None,
                    "voided_at": now if status == "void" else None,
                },
                "subtotal": amount_due,
                "subtotal_excluding_tax": amount_due,
                "total": amount_due,
                "total_discount_amounts": [],
                "total_excluding_tax": amount_due,
                "total_pretax_credit_amounts": [],
                "total_taxes": [],
                "webhooks_delivered_at": now,
            }
        )
        if sub is not None:
            sub["latest_invoice"] = iid
        return invoice

    # ---- invoices -------------------------------------------------------------------------------

    def retrieve_invoice(self, id: str) -> StripeDict:
        return self._read("retrieve_invoice", {"id": id}, lambda: self._get("invoice", id))

    def update_invoice(
        self,
        id: str,
        *,
        idempotency_key: str,
        auto_advance: bool | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> StripeDict:
        if auto_advance is None and metadata is None:
            raise ValueError("update_invoice needs auto_advance or metadata")
        params = {
            "id": id,
            "auto_advance": auto_advance,
            "metadata": dict(metadata) if metadata is not None else None,
        }

        def effect() -> StripeDict:
            invoice = self._get("invoice", id)
            if auto_advance is not None:
                invoice["auto_advance"] = auto_advance
            if metadata is not None:
                invoice["metadata"].update(metadata)
            self._emit("invoice.updated", invoice, idempotency_key)
            return invoice

        return self._write("update_invoice", params, idempotency_key, effect)

    def mark_uncollectible(self, id: str, *, idempotency_key: str) -> StripeDict:
        def effect() -> StripeDict:
            invoice = self._get("invoice", id)
            if invoice["status"] != "open":
                raise InvalidRequest(
                    f"You can only mark an open invoice uncollectible, not {invoice['status']}."
                )
            invoice["status"] = "uncollectible"
            invoice["status_transitions"]["marked_uncollectible_at"] = self._now()
            invoice["next_payment_attempt"] = None
            self._emit("invoice.marked_uncollectible", invoice, idempotency_key)
            return invoice

        return self._write("mark_uncollectible", {"id": id}, idempotency_key, effect)

    def void_invoice(self, id: str, *, idempotency_key: str) -> StripeDict:
        def effect() -> StripeDict:
            invoice = self._get("invoice", id)
            if invoice["status"] != "open":
                raise InvalidRequest(f"You can only void an open invoice, not {invoice['status']}.")
            invoice["status"] = "void"
            invoice["status_transitions"]["voided_at"] = self._now()
            invoice["next_payment_attempt"] = None
            invoice["amount_remaining"] = 0
            self._emit("invoice.voided", invoice, idempotency_key)
            return invoice

        return self._write("void_invoice", {"id": id}, idempotency_key, effect)

    def iter_invoices(self, status: str, starting_after: str | None = None) -> Iterator[StripeDict]:
        def keep(invoice: StripeDict) -> bool:
            return bool(invoice["status"] == status)

        return self._pages("iter_invoices", "invoice", {"status": status}, keep, starting_after)
