"""Every call this service makes to Stripe, as one Protocol.

`StripeSdkGateway` (`recovery.adapters.stripe.sdk`) implements it with the official SDK and
`FakeStripeGateway` (`recovery.adapters.stripe_fake`) in memory. Both return plain data (the JSON
shape webhooks carry), so `recovery.domain.stripe_objects` maps API results and event payloads
alike, and both raise `recovery.adapters.stripe.errors` instead of SDK exceptions.

Writes take a caller-chosen `idempotency_key`: Stripe caches the first result of a POST under its
key for at least 24 h, so a retry - ours after a timeout, or a worker re-running an action after a
crash - can never charge twice. https://docs.stripe.com/api/idempotent_requests
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol

# The API version stripe-python 16.1.0 is generated for (`stripe.api_version`). Requests and the
# SDK's typed params agree only at this version; bump both together.
PINNED_API_VERSION = "2026-10-28.endive"
PAGE_SIZE = 100  # Stripe's maximum `limit` for list calls

StripeDict = dict[str, Any]


class StripeGateway(Protocol):
    """Every Stripe call the service makes. Results are plain dicts shaped like webhook objects."""

    @property
    def livemode(self) -> bool: ...

    def retrieve_invoice(self, id: str) -> StripeDict: ...

    def pay_invoice(
        self,
        id: str,
        *,
        idempotency_key: str,
        payment_method: str | None = None,
        off_session: bool = True,
    ) -> StripeDict: ...

    def update_invoice(
        self,
        id: str,
        *,
        idempotency_key: str,
        auto_advance: bool | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> StripeDict: ...

    def mark_uncollectible(self, id: str, *, idempotency_key: str) -> StripeDict: ...

    def void_invoice(self, id: str, *, idempotency_key: str) -> StripeDict:
        """An open invoice voided: nothing is owed on it any more (the cancel flow's
        `unpaid_invoice = "void"`)."""
        ...

    def retrieve_customer(self, id: str) -> StripeDict: ...

    def update_customer_default_payment_method(
        self, customer_id: str, pm_id: str, *, idempotency_key: str
    ) -> StripeDict: ...

    def retrieve_subscription(self, id: str) -> StripeDict: ...

    def update_subscription(
        self, id: str, *, idempotency_key: str, **params: Any
    ) -> StripeDict: ...

    def pause_subscription(
        self, id: str, *, behavior: str, resumes_at: int | None = None, idempotency_key: str
    ) -> StripeDict: ...

    def resume_subscription(self, id: str, *, idempotency_key: str) -> StripeDict: ...

    def change_subscription_price(
        self,
        id: str,
        *,
        item_id: str,
        price_id: str,
        proration_behavior: str,
        idempotency_key: str,
        quantity: int | None = None,
    ) -> StripeDict: ...

    def set_subscription_default_payment_method(
        self, id: str, pm_id: str, *, idempotency_key: str
    ) -> StripeDict: ...

    def cancel_subscription(
        self,
        id: str,
        *,
        at_period_end: bool,
        feedback: str | None = None,
        comment: str | None = None,
        idempotency_key: str,
    ) -> StripeDict: ...

    def apply_subscription_coupon(
        self, id: str, coupon_id: str, *, idempotency_key: str
    ) -> StripeDict: ...

    def create_checkout_setup_session(
        self,
        *,
        customer_id: str,
        success_url: str,
        cancel_url: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
        locale: str | None = None,
    ) -> StripeDict: ...

    def retrieve_checkout_session(self, id: str) -> StripeDict: ...

    def retrieve_setup_intent(self, id: str) -> StripeDict: ...

    def retrieve_payment_method(self, id: str) -> StripeDict: ...

    def list_customer_payment_methods(self, customer_id: str) -> list[StripeDict]: ...

    def iter_customers(self, starting_after: str | None = None) -> Iterator[StripeDict]: ...

    def iter_subscriptions(
        self, starting_after: str | None = None, status: str = "all"
    ) -> Iterator[StripeDict]: ...

    def iter_invoices(
        self, status: str, starting_after: str | None = None
    ) -> Iterator[StripeDict]: ...

    def iter_events(
        self, created_gte: int, starting_after: str | None = None
    ) -> Iterator[StripeDict]: ...

    def list_webhook_endpoints(self) -> list[StripeDict]:
        """Every webhook endpoint of the account: url, enabled_events, api_version, status
        (`recovery doctor` checks ours is there). https://docs.stripe.com/api/webhook_endpoints/list"""
        ...

    # ---- outreach: annual-term offers and win-back (issue 12) ------------------------------------

    def retrieve_price(self, id: str) -> StripeDict: ...

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
        """The invoice a price change made now would produce (`POST /v1/invoices/create_preview`
        with `subscription_details`); the same `proration_date` on the switch gives the same
        amounts. docs/stripe.md#plan-changes-and-discounts"""
        ...

    def preview_price_from(
        self, customer_id: str, *, price_id: str, quantity: int, starts_at: int
    ) -> StripeDict:
        """The first invoice of `price_id` billed from `starts_at` (create_preview with
        `schedule_details`): what a switch at the next renewal will charge, and when."""
        ...

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
    ) -> StripeDict: ...

    def schedule_price_at_renewal(
        self, subscription_id: str, *, price_id: str, quantity: int, idempotency_key: str
    ) -> StripeDict:
        """A subscription schedule from the subscription: the current phase runs to its end,
        then one year on `price_id`, then the schedule releases the subscription. Returns the
        schedule."""
        ...

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
        """Checkout in subscription mode: the customer restarts `price_id` with a card."""
        ...
