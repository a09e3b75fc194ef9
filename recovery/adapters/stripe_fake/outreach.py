"""The fake's calls for annual-term offers and win-back, a mixin of `FakeStripeGateway`:
prices, invoice previews, an immediate switch to another price with its proration invoice,
subscription schedules, and Checkout in subscription mode - what localstripe lacks
(docs/testing-parts.md#what-localstripe-lacks).

Besides the Protocol's calls, two play the customer or time: `complete_subscription_checkout`
and `start_scheduled_phase`.

Prorations follow Stripe's rule for a change of interval (docs/stripe.md#plan-changes-and-
discounts): the billing date moves to the switch, the new period is charged at once, less the
unused part of the current period at the old price (by seconds, as Stripe prorates).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from recovery.adapters.stripe.errors import InvalidRequest
from recovery.adapters.stripe.params import PRORATION_BEHAVIORS, check_choice
from recovery.adapters.stripe.protocol import StripeDict
from recovery.adapters.stripe_fake.store import clone

YEAR = 365 * 86400


class OutreachFakeMixin:
    if TYPE_CHECKING:  # provided by FakeStripeGateway
        store: dict[str, dict[str, StripeDict]]

        def _now(self) -> int: ...
        def new_id(self, prefix: str) -> str: ...
        def put(self, obj: Mapping[str, Any]) -> StripeDict: ...
        def _get(self, kind: str, oid: str, param: str | None = None) -> StripeDict: ...
        def _emit(self, event_type: str, obj: StripeDict, key: str | None = None) -> None: ...
        def _read(self, method: str, params: dict[str, Any], fetch: Callable[[], Any]) -> Any: ...
        def _write(
            self, method: str, params: dict[str, Any], key: str, effect: Callable[[], StripeDict]
        ) -> StripeDict: ...

        add_subscription: Callable[..., StripeDict]
        add_invoice: Callable[..., StripeDict]
        _item: Callable[[str, StripeDict, int, int], StripeDict]

    def retrieve_price(self, id: str) -> StripeDict:
        found: StripeDict = self._read("retrieve_price", {"id": id}, lambda: self._get("price", id))
        return found

    def _switch_lines(
        self,
        sub: StripeDict,
        item_id: str,
        price: StripeDict,
        quantity: int,
        behavior: str,
        at: int,
    ) -> tuple[StripeDict, list[StripeDict]]:
        item = next((i for i in sub["items"]["data"] if i["id"] == item_id), None)
        if item is None:
            raise InvalidRequest(f"No such subscription item: '{item_id}'", param="items[0][id]")
        if sub["status"] not in ("active", "trialing", "past_due"):
            raise InvalidRequest("This subscription can no longer be updated.")
        start, end = item["current_period_start"], item["current_period_end"]
        old = item["price"]["unit_amount"] * item["quantity"]
        lines = [{"amount": price["unit_amount"] * quantity, "proration": False}]
        if behavior != "none" and end > at:
            unused = round(old * (end - at) / max(end - start, 1))
            lines.append({"amount": -unused, "proration": True})
        return item, lines

    def _preview(
        self, customer: str, currency: str, lines: list[StripeDict], at: int
    ) -> StripeDict:
        total = sum(line["amount"] for line in lines)
        return {
            "id": f"upcoming_{self.new_id('in')}",
            "object": "invoice",
            "customer": customer,
            "currency": currency,
            "created": at,
            "period_start": at,
            "period_end": at,
            "lines": {"object": "list", "data": clone(lines), "has_more": False},
            "subtotal": total,
            "total": total,
            "amount_due": max(total, 0),
            "starting_balance": 0,
            "status": "draft",
        }

    def preview_price_change(
        self,
        subscription_id: str,
        *,
        customer_id: str,
        item_id: str,
        price_id: str,
        quantity: int,
        proration_behavior: str,
        proration_date: int,
    ) -> StripeDict:
        check_choice(proration_behavior, PRORATION_BEHAVIORS, "proration_behavior")

        def fetch() -> StripeDict:
            sub = self._get("subscription", subscription_id)
            if sub["customer"] != customer_id:
                raise InvalidRequest("The subscription is not the customer's", param="customer")
            price = self._get("price", price_id, "subscription_details[items][0][price]")
            _, lines = self._switch_lines(
                sub, item_id, price, quantity, proration_behavior, proration_date
            )
            return self._preview(sub["customer"], price["currency"], lines, proration_date)

        params = {"subscription": subscription_id, "price": price_id, "date": proration_date}
        result: StripeDict = self._read("preview_price_change", params, fetch)
        return result

    def preview_price_from(
        self, customer_id: str, *, price_id: str, quantity: int, starts_at: int
    ) -> StripeDict:
        def fetch() -> StripeDict:
            self._get("customer", customer_id, "customer")
            price = self._get("price", price_id, "schedule_details[phases][0][items][0][price]")
            lines = [{"amount": price["unit_amount"] * quantity, "proration": False}]
            return self._preview(customer_id, price["currency"], lines, starts_at)

        params = {"customer": customer_id, "price": price_id, "starts_at": starts_at}
        result: StripeDict = self._read("preview_price_from", params, fetch)
        return result

    def switch_subscription_price(
        self,
        subscription_id: str,
        *,
        item_id: str,
        price_id: str,
        quantity: int,
        proration_behavior: str,
        proration_date: int,
        idempotency_key: str,
    ) -> StripeDict:
        check_choice(proration_behavior, PRORATION_BEHAVIORS, "proration_behavior")

        def effect() -> StripeDict:
            sub = self._get("subscription", subscription_id)
            price = self._get("price", price_id, "items[0][price]")
            item, lines = self._switch_lines(
                sub, item_id, price, quantity, proration_behavior, proration_date
            )
            now = self._now()
            interval_changed = item["price"]["recurring"] != price["recurring"]
            item["price"], item["quantity"] = clone(price), quantity
            if interval_changed:  # the billing date moves to the switch
                fresh = self._item(subscription_id, price, quantity, now)
                item["current_period_start"] = now
                item["current_period_end"] = fresh["current_period_end"]
                sub["billing_cycle_anchor"] = now
            self._emit("customer.subscription.updated", sub, idempotency_key)
            if interval_changed and proration_behavior != "none":
                amount = max(sum(line["amount"] for line in lines), 0)
                invoice = self.add_invoice(
                    sub["customer"], subscription_id=subscription_id, amount_due=amount,
                    status="paid",
                )  # fmt: skip
                invoice["billing_reason"] = "subscription_update"
                self.store["invoice"][invoice["id"]]["billing_reason"] = "subscription_update"
                self._emit("invoice.paid", self.store["invoice"][invoice["id"]], idempotency_key)
            return sub

        params = {
            "id": subscription_id,
            "item_id": item_id,
            "price_id": price_id,
            "quantity": quantity,
            "proration_behavior": proration_behavior,
            "proration_date": proration_date,
        }
        return self._write("switch_subscription_price", params, idempotency_key, effect)

    def schedule_price_at_renewal(
        self, subscription_id: str, *, price_id: str, quantity: int, idempotency_key: str
    ) -> StripeDict:
        def effect() -> StripeDict:
            sub = self._get("subscription", subscription_id)
            price = self._get("price", price_id, "phases[1][items][0][price]")
            if sub.get("schedule"):
                raise InvalidRequest(
                    "You cannot migrate a subscription that is already attached to a schedule",
                    param="from_subscription",
                )
            item = sub["items"]["data"][0]
            end = item["current_period_end"]
            current = {"price": item["price"]["id"], "quantity": item["quantity"]}
            schedule = self.put(
                {
                    "id": self.new_id("sub_sched"),
                    "object": "subscription_schedule",
                    "created": self._now(),
                    "customer": sub["customer"],
                    "subscription": subscription_id,
                    "status": "active",
                    "end_behavior": "release",
                    "current_phase": {"start_date": item["current_period_start"], "end_date": end},
                    "phases": [
                        {
                            "start_date": item["current_period_start"],
                            "end_date": end,
                            "items": [current],
                        },
                        {
                            "start_date": end,
                            "end_date": end + YEAR,
                            "items": [{"price": price["id"], "quantity": quantity}],
                        },
                    ],
                }
            )
            sub["schedule"] = schedule["id"]
            self._emit("subscription_schedule.created", schedule, idempotency_key)
            self._emit("customer.subscription.updated", sub, idempotency_key)
            return schedule

        params = {"id": subscription_id, "price_id": price_id, "quantity": quantity}
        return self._write("schedule_price_at_renewal", params, idempotency_key, effect)

    def start_scheduled_phase(self, schedule_id: str) -> StripeDict:
        """Play time: the renewal comes, the schedule's next phase starts, and - its last -
        the schedule releases the subscription."""
        schedule = self._get("subscription_schedule", schedule_id)
        sub = self._get("subscription", schedule["subscription"])
        phase = schedule["phases"][1]
        price = self._get("price", phase["items"][0]["price"])
        item = sub["items"]["data"][0]
        item["price"], item["quantity"] = clone(price), phase["items"][0]["quantity"]
        item["current_period_start"], item["current_period_end"] = (
            phase["start_date"],
            phase["end_date"],
        )
        schedule.update(status="released", released_subscription=sub["id"])
        sub["schedule"] = None
        self._emit("customer.subscription.updated", sub)
        return clone(sub)

    def create_checkout_subscription_session(
        self,
        *,
        customer_id: str,
        price_id: str,
        quantity: int,
        success_url: str,
        cancel_url: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
        coupon: str | None = None,
        locale: str | None = None,
    ) -> StripeDict:
        def effect() -> StripeDict:
            self._get("customer", customer_id, "customer")
            price = self._get("price", price_id, "line_items[0][price]")
            if coupon:
                self._get("coupon", coupon, "discounts[0][coupon]")
            now, sid = self._now(), self.new_id("cs_test")
            return self.put(
                {
                    "id": sid,
                    "object": "checkout.session",
                    "cancel_url": cancel_url,
                    "created": now,
                    "currency": price["currency"],
                    "customer": customer_id,
                    "discounts": [{"coupon": coupon}] if coupon else [],
                    "expires_at": now + 86400,
                    "line_items": [{"price": price_id, "quantity": quantity}],
                    "locale": locale,
                    "metadata": dict(metadata),
                    "mode": "subscription",
                    "payment_status": "unpaid",
                    "status": "open",
                    "subscription": None,
                    "success_url": success_url,
                    "url": f"https://checkout.stripe.com/c/pay/{sid}",
                }
            )

        params = {
            "customer_id": customer_id,
            "price_id": price_id,
            "quantity": quantity,
            "success_url": success_url,
            "cancel_url": cancel_url,
            "metadata": dict(metadata),
            "coupon": coupon,
            "locale": locale,
        }
        return self._write("create_checkout_subscription_session", params, idempotency_key, effect)

    def complete_subscription_checkout(self, id: str) -> StripeDict:
        """Play the customer: pay on Checkout; Stripe starts the subscription."""
        session = self._get("checkout.session", id)
        line = session["line_items"][0]
        sub = self.add_subscription(
            session["customer"],
            price_id=line["price"],
            quantity=line["quantity"],
            metadata=session["metadata"],
        )
        stored = self.store["subscription"][sub["id"]]
        for discount in session["discounts"]:
            stored["discounts"].append(self.new_id("di"))
            stored.setdefault("recovery_fake_coupons", []).append(discount["coupon"])
        session.update(status="complete", payment_status="paid", subscription=sub["id"])
        self._emit("customer.subscription.created", stored)
        self._emit("checkout.session.completed", session)
        return clone(session)
