"""Prices, coupons and subscriptions: seeding, and the writes a retention offer or a
cancellation makes (pause, resume, price change, coupon, default card, cancel)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from recovery.adapters.stripe.errors import InvalidRequest
from recovery.adapters.stripe.params import (
    PAUSE_BEHAVIORS,
    PRORATION_BEHAVIORS,
    cancellation_details,
    check_choice,
    check_subscription_params,
)
from recovery.adapters.stripe.protocol import StripeDict
from recovery.adapters.stripe_fake.store import DAY, FakeStore, _missing, _nulls, clone


class FakeSubscriptions(FakeStore):
    def add_price(
        self,
        id: str | None = None,
        *,
        unit_amount: int = 2000,
        currency: str = "usd",
        interval: str = "month",
        interval_count: int = 1,
        product: str | None = None,
    ) -> StripeDict:
        recurring = {"interval": interval, "interval_count": interval_count, "meter": None}
        recurring |= {"usage_type": "licensed", "trial_period_days": None}
        return self.put(
            {
                **self._base("price", id or self.new_id("price"), None),
                **_nulls("custom_unit_amount", "lookup_key", "nickname", "tiers_mode"),
                **_nulls("transform_quantity"),
                "active": True,
                "billing_scheme": "per_unit",
                "currency": currency,
                "metadata": {},
                "product": product or self.new_id("prod"),
                "recurring": recurring,
                "tax_behavior": "unspecified",
                "type": "recurring",
                "unit_amount": unit_amount,
                "unit_amount_decimal": str(unit_amount),
            }
        )

    def add_coupon(
        self, id: str | None = None, *, percent_off: float | None = 20.0, duration: str = "once"
    ) -> StripeDict:
        return self.put(
            {
                **self._base("coupon", id or self.new_id("coupon"), None),
                **_nulls("amount_off", "currency", "duration_in_months", "max_redemptions"),
                **_nulls("name", "redeem_by"),
                "duration": duration,
                "metadata": {},
                "percent_off": percent_off,
                "times_redeemed": 0,
                "valid": True,
            }
        )

    def _item(self, sub_id: str, price: StripeDict, quantity: int, start: int) -> StripeDict:
        recurring = price["recurring"]
        length = {"day": 1, "week": 7, "month": 30, "year": 365}[recurring["interval"]] * DAY
        return {
            "id": self.new_id("si"),
            "object": "subscription_item",
            "created": start,
            "current_period_end": start + length * recurring["interval_count"],
            "current_period_start": start,
            "discounts": [],
            "metadata": {},
            "price": clone(price),
            "quantity": quantity,
            "subscription": sub_id,
            "tax_rates": [],
        }

    def add_subscription(
        self,
        customer_id: str,
        *,
        price_id: str | None = None,
        id: str | None = None,
        status: str = "active",
        quantity: int = 1,
        default_payment_method: str | None = None,
        current_period_start: int | None = None,
        metadata: Mapping[str, str] | None = None,
        created: int | None = None,
    ) -> StripeDict:
        price = self._get("price", price_id) if price_id else self.add_price()
        sid = id or self.new_id("sub")
        start = self._now() if current_period_start is None else current_period_start
        items = [self._item(sid, price, quantity, start)]
        url = f"/v1/subscription_items?subscription={sid}"
        return self.put(
            {
                **self._base("subscription", sid, start if created is None else created),
                **_nulls("application", "application_fee_percent", "billing_cycle_anchor_config"),
                **_nulls("cancel_at", "canceled_at", "days_until_due", "default_source"),
                **_nulls("description", "ended_at", "latest_invoice", "on_behalf_of"),
                **_nulls("pause_collection", "pending_invoice_item_interval", "schedule"),
                **_nulls("pending_setup_intent", "pending_update", "test_clock", "transfer_data"),
                **_nulls("trial_end", "trial_start"),
                "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
                "billing_cycle_anchor": start,
                "cancel_at_period_end": False,
                "cancellation_details": _nulls("comment", "feedback", "reason"),
                "collection_method": "charge_automatically",
                "currency": price["currency"],
                "customer": customer_id,
                "default_payment_method": default_payment_method,
                "default_tax_rates": [],
                "discounts": [],
                "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
                "items": {"object": "list", "data": items, "has_more": False, "url": url},
                "metadata": dict(metadata or {}),
                "payment_settings": {
                    **_nulls("payment_method_options", "payment_method_types"),
                    "save_default_payment_method": "off",
                },
                "start_date": start,
                "status": status,
                "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
            }
        )

    # ---- subscriptions --------------------------------------------------------------------------

    def retrieve_subscription(self, id: str) -> StripeDict:
        return self._read(
            "retrieve_subscription", {"id": id}, lambda: self._get("subscription", id)
        )

    def _sub_write(
        self, method: str, id: str, params: dict[str, Any], key: str, changes: dict[str, Any]
    ) -> StripeDict:
        def effect() -> StripeDict:
            sub = self._get("subscription", id)
            before = clone(sub)
            self._apply(sub, changes)
            if sub != before:
                ended = sub["status"] == "canceled" and before["status"] != "canceled"
                kind = "deleted" if ended else "updated"
                self._emit(f"customer.subscription.{kind}", sub, key)
            return sub

        return self._write(method, {"id": id, **params}, key, effect)

    _SUPPORTED = frozenset(
        {
            "cancel_at_period_end",
            "cancellation_details",
            "default_payment_method",
            "description",
            "discounts",
            "items",
            "metadata",
            "pause_collection",
            "proration_behavior",
        }
    )

    def _apply(self, sub: StripeDict, changes: Mapping[str, Any]) -> None:
        """Apply update parameters (validated first, so a failure changes nothing)."""
        unsupported = set(changes) - self._SUPPORTED - {"_cancel_now"}
        if unsupported:
            raise NotImplementedError(f"the fake does not model {sorted(unsupported)}")
        if sub["status"] in ("canceled", "incomplete_expired") and "_cancel_now" not in changes:
            raise InvalidRequest(
                "A canceled subscription can only update its cancellation_details and metadata."
            )
        if changes.get("default_payment_method"):
            self._attached(
                changes["default_payment_method"], sub["customer"], "default_payment_method"
            )
        new_items: list[tuple[StripeDict, StripeDict, int]] = []
        for i, change in enumerate(changes.get("items") or []):
            item = next((x for x in sub["items"]["data"] if x["id"] == change.get("id")), None)
            if item is None:
                raise _missing("subscription item", str(change.get("id")), f"items[{i}][id]")
            price = self._get("price", change["price"], f"items[{i}][price]")
            new_items.append((item, price, int(change.get("quantity") or 1)))
        discounts: list[str] = []
        for i, entry in enumerate(changes.get("discounts") or []):
            coupon = self._get("coupon", entry["coupon"], f"discounts[{i}][coupon]")
            discount = self.put(
                {
                    "id": self.new_id("di"),
                    "object": "discount",
                    "checkout_session": None,
                    "customer": sub["customer"],
                    "customer_account": None,
                    "end": None,
                    "invoice": None,
                    "invoice_item": None,
                    "promotion_code": None,
                    "source": {"coupon": coupon["id"], "type": "coupon"},
                    "start": self._now(),
                    "subscription": sub["id"],
                    "subscription_item": None,
                }
            )
            discounts.append(discount["id"])
        # -- validated; now change
        for item, price, quantity in new_items:
            item["price"] = clone(price)
            item["quantity"] = quantity  # Stripe resets it to 1 unless given
        if "discounts" in changes:
            sub["discounts"] = discounts
        if "metadata" in changes:
            sub["metadata"].update(changes["metadata"] or {})
        if "description" in changes:
            sub["description"] = changes["description"] or None
        if "default_payment_method" in changes:
            sub["default_payment_method"] = changes["default_payment_method"] or None
        if "pause_collection" in changes:
            pause = changes["pause_collection"]
            sub["pause_collection"] = (
                {"behavior": pause["behavior"], "resumes_at": pause.get("resumes_at")}
                if pause
                else None
            )
        details = changes.get("cancellation_details") or {}
        for name in ("feedback", "comment"):
            if name in details:
                sub["cancellation_details"][name] = details[name]
        period_end = min(i["current_period_end"] for i in sub["items"]["data"])
        if "cancel_at_period_end" in changes:
            at_end = bool(changes["cancel_at_period_end"])
            sub["cancel_at_period_end"] = at_end
            sub["cancel_at"] = period_end if at_end else None
            sub["canceled_at"] = self._now() if at_end else None
            sub["cancellation_details"]["reason"] = "cancellation_requested" if at_end else None
        if changes.get("_cancel_now") and sub["status"] != "canceled":
            now = self._now()
            sub.update(status="canceled", canceled_at=now, ended_at=now, cancel_at=None)
            sub["cancellation_details"]["reason"] = "cancellation_requested"
            # Cancelling turns off collection on the subscription's open and draft invoices.
            # https://docs.stripe.com/billing/subscriptions/cancel
            for invoice in self.store["invoice"].values():
                parent = (invoice.get("parent") or {}).get("subscription_details") or {}
                if parent.get("subscription") == sub["id"] and invoice["status"] in (
                    "draft",
                    "open",
                ):
                    invoice["auto_advance"] = False

    def update_subscription(self, id: str, *, idempotency_key: str, **params: Any) -> StripeDict:
        check_subscription_params(params)
        if "proration_behavior" in params:
            check_choice(params["proration_behavior"], PRORATION_BEHAVIORS, "proration_behavior")
        return self._sub_write("update_subscription", id, params, idempotency_key, params)

    def pause_subscription(
        self, id: str, *, behavior: str, resumes_at: int | None = None, idempotency_key: str
    ) -> StripeDict:
        check_choice(behavior, PAUSE_BEHAVIORS, "pause_collection[behavior]")
        pause = {"behavior": behavior, "resumes_at": resumes_at}
        return self._sub_write(
            "pause_subscription", id, dict(pause), idempotency_key, {"pause_collection": pause}
        )

    def resume_subscription(self, id: str, *, idempotency_key: str) -> StripeDict:
        return self._sub_write(
            "resume_subscription", id, {}, idempotency_key, {"pause_collection": ""}
        )

    def change_subscription_price(
        self,
        id: str,
        *,
        item_id: str,
        price_id: str,
        proration_behavior: str,
        idempotency_key: str,
        quantity: int | None = None,
    ) -> StripeDict:
        check_choice(proration_behavior, PRORATION_BEHAVIORS, "proration_behavior")
        params = {
            "item_id": item_id,
            "price_id": price_id,
            "proration_behavior": proration_behavior,
            "quantity": quantity,
        }
        item = {"id": item_id, "price": price_id, "quantity": quantity}
        changes = {"items": [item], "proration_behavior": proration_behavior}
        return self._sub_write("change_subscription_price", id, params, idempotency_key, changes)

    def set_subscription_default_payment_method(
        self, id: str, pm_id: str, *, idempotency_key: str
    ) -> StripeDict:
        return self._sub_write(
            "set_subscription_default_payment_method",
            id,
            {"pm_id": pm_id},
            idempotency_key,
            {"default_payment_method": pm_id},
        )

    def cancel_subscription(
        self,
        id: str,
        *,
        at_period_end: bool,
        feedback: str | None = None,
        comment: str | None = None,
        idempotency_key: str,
    ) -> StripeDict:
        details = cancellation_details(feedback, comment)
        params = {"at_period_end": at_period_end, "feedback": feedback, "comment": comment}
        changes: dict[str, Any] = {"cancellation_details": details} if details else {}
        if at_period_end:
            changes["cancel_at_period_end"] = True
        else:
            changes["_cancel_now"] = True
        return self._sub_write("cancel_subscription", id, params, idempotency_key, changes)

    def apply_subscription_coupon(
        self, id: str, coupon_id: str, *, idempotency_key: str
    ) -> StripeDict:
        return self._sub_write(
            "apply_subscription_coupon",
            id,
            {"coupon_id": coupon_id},
            idempotency_key,
            {"discounts": [{"coupon": coupon_id}]},
        )

    def iter_subscriptions(
        self, starting_after: str | None = None, status: str = "all"
    ) -> Iterator[StripeDict]:
        def keep(sub: StripeDict) -> bool:
            if status == "all":
                return True
            return bool(sub["status"] == status)

        params = {"status": status}
        return self._pages("iter_subscriptions", "subscription", params, keep, starting_after)
