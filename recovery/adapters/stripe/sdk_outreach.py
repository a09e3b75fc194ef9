"""The SDK gateway's calls for annual-term offers and win-back (issue 12), as a mixin of
`StripeSdkGateway`: a price, invoice previews (`invoices.create_preview`), a price switch with
its proration date, subscription schedules, Checkout in subscription mode. They go through the
gateway's own `_call` (retries, error translation) and `_key` (idempotency keys).

Methods (for whoever reshapes the gateway's calls): retrieve_price, preview_price_change,
preview_price_from, switch_subscription_price, schedule_price_at_renewal,
create_checkout_subscription_session.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import stripe
from stripe.params import InvoiceCreatePreviewParams, SubscriptionScheduleUpdateParams
from stripe.params.checkout import SessionCreateParams

from recovery.adapters.stripe.params import PRORATION_BEHAVIORS, check_choice
from recovery.adapters.stripe.protocol import StripeDict
from recovery.adapters.stripe.retries import plain

if TYPE_CHECKING:
    from stripe._v1_services import V1Services

T = TypeVar("T")


class OutreachSdkMixin:
    if TYPE_CHECKING:  # provided by StripeSdkGateway
        _v1: V1Services

        def _call(self, what: str, request: Callable[[], T]) -> T: ...
        @staticmethod
        def _key(idempotency_key: str) -> stripe.RequestOptions: ...
        def update_subscription(
            self, id: str, *, idempotency_key: str, **params: Any
        ) -> StripeDict: ...

    def retrieve_price(self, id: str) -> StripeDict:
        return plain(self._call("retrieve_price", lambda: self._v1.prices.retrieve(id)))

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
        # docs/stripe.md#plan-changes-and-discounts; https://docs.stripe.com/api/invoices/create_preview
        check_choice(proration_behavior, PRORATION_BEHAVIORS, "proration_behavior")
        params: InvoiceCreatePreviewParams = {
            "customer": customer_id,
            "subscription": subscription_id,
            "subscription_details": {
                "items": [{"id": item_id, "price": price_id, "quantity": quantity}],
                "proration_behavior": proration_behavior,
                "proration_date": proration_date,
            },
        }
        return plain(
            self._call("preview_price_change", lambda: self._v1.invoices.create_preview(params))
        )

    def preview_price_from(
        self, customer_id: str, *, price_id: str, quantity: int, starts_at: int
    ) -> StripeDict:
        params: InvoiceCreatePreviewParams = {
            "customer": customer_id,
            "schedule_details": {
                "phases": [
                    {
                        "items": [{"price": price_id, "quantity": quantity}],
                        "start_date": starts_at,
                        "duration": {"interval": "year", "interval_count": 1},
                    }
                ],
                "end_behavior": "release",
            },
        }
        return plain(
            self._call("preview_price_from", lambda: self._v1.invoices.create_preview(params))
        )

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
        return self.update_subscription(
            subscription_id,
            idempotency_key=idempotency_key,
            items=[{"id": item_id, "price": price_id, "quantity": quantity}],
            proration_behavior=proration_behavior,
            proration_date=proration_date,
        )

    def schedule_price_at_renewal(
        self, subscription_id: str, *, price_id: str, quantity: int, idempotency_key: str
    ) -> StripeDict:
        # A schedule is created from the subscription (one phase: the current one), then given
        # a second phase; two requests, each with its own key derived from the caller's, so a
        # retry after a crash between them finds the same schedule and finishes it.
        # https://docs.stripe.com/billing/subscriptions/subscription-schedules
        create_key = self._key(f"{idempotency_key}:create")
        schedule = plain(
            self._call(
                "create_subscription_schedule",
                lambda: self._v1.subscription_schedules.create(
                    {"from_subscription": subscription_id}, create_key
                ),
            )
        )
        current = schedule["phases"][0]
        kept = [
            {
                "price": item["price"] if isinstance(item["price"], str) else item["price"]["id"],
                "quantity": item.get("quantity") or 1,
            }
            for item in current["items"]
        ]
        update: SubscriptionScheduleUpdateParams = {
            "end_behavior": "release",
            "proration_behavior": "none",
            "phases": [
                {
                    "items": kept,  # type: ignore[typeddict-item]
                    "start_date": current["start_date"],
                    "end_date": current["end_date"],
                },
                {
                    "items": [{"price": price_id, "quantity": quantity}],
                    "duration": {"interval": "year", "interval_count": 1},
                },
            ],
        }
        phases_key = self._key(f"{idempotency_key}:phases")
        return plain(
            self._call(
                "update_subscription_schedule",
                lambda: self._v1.subscription_schedules.update(schedule["id"], update, phases_key),
            )
        )

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
        # A cancelled subscription cannot be reactivated, only replaced: Checkout in
        # subscription mode starts a new one (docs/stripe.md#restarting-a-lapsed-customer).
        params: SessionCreateParams = {
            "mode": "subscription",
            "customer": customer_id,
            "line_items": [{"price": price_id, "quantity": quantity}],
            "success_url": success_url,
            "cancel_url": cancel_url,
            "metadata": dict(metadata),
            "subscription_data": {"metadata": dict(metadata)},
        }
        if coupon:
            params["discounts"] = [{"coupon": coupon}]
        if locale is not None:
            params["locale"] = locale
        options = self._key(idempotency_key)
        return plain(
            self._call(
                "create_checkout_subscription_session",
                lambda: self._v1.checkout.sessions.create(params, options),
            )
        )
