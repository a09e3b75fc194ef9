"""Paying an invoice: which card is charged, the declines and 3-D Secure a test programs, and
what an attempt leaves behind (charge, PaymentIntent, invoice payment, events, the subscription's
status)."""

from __future__ import annotations

from recovery.adapters.stripe.errors import AuthenticationRequired, CardDeclined, InvalidRequest
from recovery.adapters.stripe.protocol import StripeDict
from recovery.adapters.stripe_fake.store import FakeStore, _CardBehaviour, _ScriptedFailure, clone


class FakePayments(FakeStore):
    # ---- programming outcomes -------------------------------------------------------------------

    def fail_next_payment(
        self,
        invoice_id: str,
        decline_code: str | None = "generic_decline",
        *,
        code: str = "card_declined",
        advice_code: str | None = None,
        network_advice_code: str | None = None,
        network_decline_code: str | None = None,
        brand: str | None = None,
        times: int = 1,
    ) -> None:
        failure = _ScriptedFailure(
            False,
            code,
            decline_code,
            advice_code,
            network_advice_code,
            network_decline_code,
            brand,
        )
        self._scripted[invoice_id].extend([failure] * times)

    def require_authentication(self, invoice_id: str, *, times: int = 1) -> None:
        self._scripted[invoice_id].extend([_ScriptedFailure(authenticate=True)] * times)

    # ---- paying ---------------------------------------------------------------------------------

    def pay_invoice(
        self,
        id: str,
        *,
        idempotency_key: str,
        payment_method: str | None = None,
        off_session: bool = True,
    ) -> StripeDict:
        params = {"id": id, "payment_method": payment_method, "off_session": off_session}
        return self._write(
            "pay_invoice",
            params,
            idempotency_key,
            lambda: self._pay(id, payment_method, idempotency_key),
        )

    def _payment_method_for(self, invoice: StripeDict, explicit: str | None) -> StripeDict:
        if explicit is not None:
            pm = self._get("payment_method", explicit, "payment_method")
            if pm["customer"] != invoice["customer"]:
                raise InvalidRequest(
                    "The PaymentMethod must be attached to the invoice's customer.",
                    code="payment_method_invalid_parameter",
                    param="payment_method",
                )
            return pm
        sub_id = (invoice.get("parent") or {}).get("subscription_details", {}).get("subscription")
        sub = self.store["subscription"].get(sub_id or "")
        customer = self.store["customer"].get(invoice["customer"], {})
        # Stripe's order: the subscription's default, then the customer's invoice default.
        pm_id = (sub or {}).get("default_payment_method") or (
            customer.get("invoice_settings") or {}
        ).get("default_payment_method")
        if not pm_id:
            raise InvalidRequest(
                "This customer has no attached payment source or default payment method."
            )
        return self._get("payment_method", pm_id, "payment_method")

    def _pay(self, invoice_id: str, explicit_pm: str | None, key: str) -> StripeDict:
        invoice = self._get("invoice", invoice_id)
        if invoice["status"] == "paid":
            raise InvalidRequest("Invoice is already paid")
        if invoice["status"] not in ("draft", "open", "uncollectible"):
            raise InvalidRequest(f"You cannot pay an invoice with status {invoice['status']}.")
        pm = self._payment_method_for(invoice, explicit_pm)
        now = self._now()
        if invoice["status"] == "draft":
            invoice["status"] = "open"
            invoice["status_transitions"]["finalized_at"] = now
        script = self._scripted[invoice_id]
        scripted = script.popleft() if script else None
        card = self._cards.get(pm["id"], _CardBehaviour())
        invoice["attempt_count"] += 1
        invoice["attempted"] = True
        intent_id, charge_id = self.new_id("pi"), self.new_id("ch")
        if (scripted and scripted.authenticate) or (
            scripted is None and card.requires_authentication
        ):
            self._record_attempt(invoice, pm, intent_id, None, "requires_action", None)
            self._emit("invoice.payment_action_required", invoice, key)
            raise AuthenticationRequired(
                "This payment requires additional user action before it can be completed.",
                code="invoice_payment_intent_requires_action",
                hosted_invoice_url=invoice["hosted_invoice_url"],
                payment_intent_id=intent_id,
                payment_method_id=pm["id"],
                card_brand=pm["card"]["brand"],
            )
        decline = scripted or (
            _ScriptedFailure(decline_code=card.decline_code) if card.decline_code else None
        )
        if decline is not None:
            charge = self._record_attempt(invoice, pm, intent_id, charge_id, "failed", decline)
            self._emit("charge.failed", charge, key)
            self._emit("invoice.payment_failed", invoice, key)
            self._set_subscription_status(invoice, "past_due", key)
            raise CardDeclined(
                "Your card was declined.",
                code=decline.code,
                decline_code=decline.decline_code,
                advice_code=decline.advice_code,
                network_advice_code=decline.network_advice_code,
                network_decline_code=decline.network_decline_code,
                charge_id=charge_id,
                payment_intent_id=intent_id,
                payment_method_id=pm["id"],
                card_brand=decline.brand or pm["card"]["brand"],
            )
        charge = self._record_attempt(invoice, pm, intent_id, charge_id, "succeeded", None)
        invoice.update(
            status="paid",
            amount_paid=invoice["amount_due"],
            amount_remaining=0,
            next_payment_attempt=None,
            auto_advance=False,
        )
        invoice["status_transitions"]["paid_at"] = now
        self._emit("charge.succeeded", charge, key)
        self._emit("invoice.paid", invoice, key)
        self._emit("invoice.payment_succeeded", invoice, key)
        self._set_subscription_status(invoice, "active", key)
        return invoice

    def _record_attempt(
        self,
        invoice: StripeDict,
        pm: StripeDict,
        intent_id: str,
        charge_id: str | None,
        status: str,
        decline: _ScriptedFailure | None,
    ) -> StripeDict:
        card = pm["card"]
        brand = (decline.brand if decline else None) or card["brand"]
        now = self._now()
        charge: StripeDict = {}
        if charge_id is not None:
            charge = self._insert(
                {
                    "id": charge_id,
                    "object": "charge",
                    "amount": invoice["amount_remaining"],
                    "captured": status == "succeeded",
                    "created": now,
                    "currency": invoice["currency"],
                    "customer": invoice["customer"],
                    "failure_code": decline.code if decline else None,
                    "failure_message": "Your card was declined." if decline else None,
                    "livemode": self._livemode,
                    "metadata": {},
                    "outcome": {
                        "advice_code": decline.advice_code if decline else None,
                        "network_advice_code": decline.network_advice_code if decline else None,
                        "network_decline_code": decline.network_decline_code if decline else None,
                        "network_status": "declined_by_network"
                        if decline
                        else "approved_by_network",
                        "reason": decline.decline_code if decline else None,
                        "risk_level": "normal",
                        "seller_message": "The bank did not return any further details."
                        if decline
                        else "Payment complete.",
                        "type": "issuer_declined" if decline else "authorized",
                    },
                    "paid": status == "succeeded",
                    "payment_intent": intent_id,
                    "payment_method": pm["id"],
                    "payment_method_details": {
                        "card": {
                            "brand": brand,
                            "country": card["country"],
                            "exp_month": card["exp_month"],
                            "exp_year": card["exp_year"],
                            "fingerprint": card["fingerprint"],
                            "funding": card["funding"],
                            "last4": card["last4"],
                        },
                        "type": "card",
                    },
                    "status": status,
                }
            )
        self._insert(
            {
                "id": intent_id,
                "object": "payment_intent",
                "amount": invoice["amount_remaining"],
                "created": now,
                "currency": invoice["currency"],
                "customer": invoice["customer"],
                "last_payment_error": {
                    "charge": charge_id,
                    "code": decline.code,
                    "decline_code": decline.decline_code,
                    "advice_code": decline.advice_code,
                    "network_advice_code": decline.network_advice_code,
                    "network_decline_code": decline.network_decline_code,
                    "payment_method": clone(pm),
                    "type": "card_error",
                }
                if decline
                else None,
                "latest_charge": charge_id,
                "livemode": self._livemode,
                "metadata": {},
                "payment_method": pm["id"],
                "status": {"failed": "requires_payment_method"}.get(status, status),
            }
        )
        self._insert(
            {
                "id": self.new_id("inpay"),
                "object": "invoice_payment",
                "amount_paid": invoice["amount_remaining"] if status == "succeeded" else None,
                "amount_requested": invoice["amount_remaining"],
                "created": now,
                "currency": invoice["currency"],
                "invoice": invoice["id"],
                "is_default": True,
                "livemode": self._livemode,
                "payment": {"payment_intent": intent_id, "type": "payment_intent"},
                "status": "paid" if status == "succeeded" else "open",
                "status_transitions": {
                    "canceled_at": None,
                    "paid_at": now if status == "succeeded" else None,
                },
            }
        )
        return charge

    def _set_subscription_status(self, invoice: StripeDict, status: str, key: str) -> None:
        sub_id = ((invoice.get("parent") or {}).get("subscription_details") or {}).get(
            "subscription"
        )
        sub = self.store["subscription"].get(sub_id or "")
        if sub is None or sub["status"] == status or sub["status"] == "canceled":
            return
        if status == "past_due" and sub["status"] not in ("active", "trialing"):
            return
        sub["status"] = status
        self._emit("customer.subscription.updated", sub, key)
