"""The real Stripe gateway: `StripeGateway` over the official SDK (`stripe.StripeClient`,
`client.v1.*` services), with the API version pinned, idempotency keys, bounded timeouts and
jittered retries of what Stripe says may be retried.

One gateway per process, shared by the worker's threads: the SDK's requests client keeps one
HTTP session (with its pooled connections) per thread. Under a provider call's deadline
(adapters/deadline.py) every request's timeouts are capped to what is left, and no retry starts
that could not finish in time: the call, retries included, ends by the deadline."""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar, cast

import stripe
from stripe.params import (
    CustomerListParams,
    CustomerUpdateParams,
    EventListParams,
    InvoiceListParams,
    InvoicePayParams,
    InvoiceUpdateParams,
    PaymentMethodListParams,
    SubscriptionCancelParams,
    SubscriptionListParams,
    SubscriptionUpdateParams,
    WebhookEndpointListParams,
)
from stripe.params.checkout import SessionCreateParams

from recovery.adapters import deadline
from recovery.adapters.stripe.errors import (
    AuthenticationRequired,
    GatewayError,
    InvalidRequest,
    Unavailable,
)
from recovery.adapters.stripe.params import (
    PAUSE_BEHAVIORS,
    PRORATION_BEHAVIORS,
    cancellation_details,
    check_choice,
    check_subscription_params,
)
from recovery.adapters.stripe.protocol import (
    PAGE_SIZE,
    PINNED_API_VERSION,
    StripeDict,
    StripeGateway,
)
from recovery.adapters.stripe.retries import Backoff, plain, should_retry, translate_error
from recovery.adapters.stripe.sdk_outreach import OutreachSdkMixin  # issue 12's calls

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_TIMEOUT = (5.0, 40.0)  # (connect, read) seconds; the SDK's default is 80 s for both
MIN_ATTEMPT_SECONDS = 1.0  # a retry needs at least this much of the deadline left


class DeadlineRequestsClient(stripe.RequestsClient):
    """The SDK's requests client with its (connect, read) timeout capped to the deadline of the
    provider call it runs under, if any."""

    @property
    def _timeout(self) -> float | tuple[float, float]:
        return deadline.cap_pair(self._base_timeout)

    @_timeout.setter
    def _timeout(self, value: float | tuple[float, float]) -> None:
        self._base_timeout = value


# ---- the real adapter ---------------------------------------------------------------------------


class StripeSdkGateway(OutreachSdkMixin):
    """`StripeGateway` over stripe-python's `StripeClient`.

    Retries are ours, not the SDK's (`max_network_retries=0`): the SDK does not retry a plain 429
    (only one marked `Stripe-Should-Retry: true`, i.e. lock_timeout), its sleep cannot be
    injected, and it does not honour Retry-After. We retry 429, 409, 5xx, timeouts and connection
    errors with jittered exponential backoff, re-sending the same Idempotency-Key.
    """

    def __init__(
        self,
        api_key: str,
        api_base: str | None = None,
        api_version: str = PINNED_API_VERSION,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        max_retries: int = 3,
        *,
        backoff: Backoff | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        http_client: stripe.HTTPClient | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.api_version = api_version
        self.max_retries = max_retries
        self.http_client = http_client or DeadlineRequestsClient(timeout=timeout)
        self._backoff = backoff or Backoff()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._page_size = page_size
        self._livemode = api_key.startswith(("sk_live_", "rk_live_"))
        self._client = stripe.StripeClient(
            api_key,
            stripe_version=api_version,
            base_addresses={"api": api_base} if api_base else None,
            max_network_retries=0,
            http_client=self.http_client,
        )
        self._v1 = self._client.v1

    @property
    def livemode(self) -> bool:
        return self._livemode

    def _call(self, what: str, request: Callable[[], T]) -> T:
        attempt = 0
        limit = deadline.current()
        while True:
            if limit is not None and limit.expired:
                raise Unavailable(f"stripe {what}: the call's deadline passed", code="deadline")
            try:
                return request()
            except stripe.StripeError as exc:
                error = translate_error(exc)
                if attempt >= self.max_retries or not should_retry(exc, error):
                    raise error from exc
                attempt += 1
                retry_after = getattr(error, "retry_after", None)
                wait = self._backoff.delay(attempt, self._rng, retry_after)
                if limit is not None and limit.remaining() < wait + MIN_ATTEMPT_SECONDS:
                    raise error from exc  # no time for another try: the action retries later
                log.info(
                    "stripe %s failed (%s %s), retry %d in %.2fs",
                    what,
                    error.http_status,
                    error.code or error.__class__.__name__,
                    attempt,
                    wait,
                )
                self._sleep(wait)

    @staticmethod
    def _key(idempotency_key: str) -> stripe.RequestOptions:
        if not idempotency_key or len(idempotency_key) > 255:
            raise ValueError("an idempotency key of 1-255 characters is required")
        return {"idempotency_key": idempotency_key}

    # -- invoices

    def retrieve_invoice(self, id: str) -> StripeDict:
        return plain(self._call("retrieve_invoice", lambda: self._v1.invoices.retrieve(id)))

    def pay_invoice(
        self,
        id: str,
        *,
        idempotency_key: str,
        payment_method: str | None = None,
        off_session: bool = True,
    ) -> StripeDict:
        params: InvoicePayParams = {}
        if payment_method is not None:
            params["payment_method"] = payment_method
        if not off_session:  # Stripe's default is true; send it only to change it
            params["off_session"] = False
        options = self._key(idempotency_key)
        try:
            invoice = self._call("pay_invoice", lambda: self._v1.invoices.pay(id, params, options))
        except AuthenticationRequired as exc:
            if exc.hosted_invoice_url is None:  # where the customer authenticates
                with contextlib.suppress(GatewayError):
                    exc.hosted_invoice_url = self.retrieve_invoice(id).get("hosted_invoice_url")
            raise
        return plain(invoice)

    def update_invoice(
        self,
        id: str,
        *,
        idempotency_key: str,
        auto_advance: bool | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> StripeDict:
        params: InvoiceUpdateParams = {}
        if auto_advance is not None:
            params["auto_advance"] = auto_advance
        if metadata is not None:
            params["metadata"] = dict(metadata)
        if not params:
            raise ValueError("update_invoice needs auto_advance or metadata")
        options = self._key(idempotency_key)
        return plain(
            self._call("update_invoice", lambda: self._v1.invoices.update(id, params, options))
        )

    def mark_uncollectible(self, id: str, *, idempotency_key: str) -> StripeDict:
        options = self._key(idempotency_key)
        return plain(
            self._call(
                "mark_uncollectible",
                lambda: self._v1.invoices.mark_uncollectible(id, None, options),
            )
        )

    def void_invoice(self, id: str, *, idempotency_key: str) -> StripeDict:
        options = self._key(idempotency_key)
        return plain(
            self._call("void_invoice", lambda: self._v1.invoices.void_invoice(id, None, options))
        )

    # -- customers

    def retrieve_customer(self, id: str) -> StripeDict:
        return plain(self._call("retrieve_customer", lambda: self._v1.customers.retrieve(id)))

    def update_customer_default_payment_method(
        self, customer_id: str, pm_id: str, *, idempotency_key: str
    ) -> StripeDict:
        params: CustomerUpdateParams = {"invoice_settings": {"default_payment_method": pm_id}}
        options = self._key(idempotency_key)
        return plain(
            self._call(
                "update_customer",
                lambda: self._v1.customers.update(customer_id, params, options),
            )
        )

    # -- subscriptions

    def retrieve_subscription(self, id: str) -> StripeDict:
        return plain(
            self._call("retrieve_subscription", lambda: self._v1.subscriptions.retrieve(id))
        )

    def update_subscription(self, id: str, *, idempotency_key: str, **params: Any) -> StripeDict:
        check_subscription_params(params)
        typed = cast(SubscriptionUpdateParams, params)
        options = self._key(idempotency_key)
        return plain(
            self._call(
                "update_subscription",
                lambda: self._v1.subscriptions.update(id, typed, options),
            )
        )

    def pause_subscription(
        self, id: str, *, behavior: str, resumes_at: int | None = None, idempotency_key: str
    ) -> StripeDict:
        check_choice(behavior, PAUSE_BEHAVIORS, "pause_collection[behavior]")
        pause: dict[str, Any] = {"behavior": behavior}
        if resumes_at is not None:
            pause["resumes_at"] = resumes_at
        return self.update_subscription(id, idempotency_key=idempotency_key, pause_collection=pause)

    def resume_subscription(self, id: str, *, idempotency_key: str) -> StripeDict:
        # An empty string unsets pause_collection. https://docs.stripe.com/billing/subscriptions/pause-payment
        return self.update_subscription(id, idempotency_key=idempotency_key, pause_collection="")

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
        # Naming the item replaces its price; without `id` Stripe would add a second item.
        # https://docs.stripe.com/billing/subscriptions/upgrade-downgrade
        check_choice(proration_behavior, PRORATION_BEHAVIORS, "proration_behavior")
        item: dict[str, Any] = {"id": item_id, "price": price_id}
        if quantity is not None:
            item["quantity"] = quantity
        return self.update_subscription(
            id,
            idempotency_key=idempotency_key,
            items=[item],
            proration_behavior=proration_behavior,
        )

    def set_subscription_default_payment_method(
        self, id: str, pm_id: str, *, idempotency_key: str
    ) -> StripeDict:
        return self.update_subscription(
            id, idempotency_key=idempotency_key, default_payment_method=pm_id
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
        if at_period_end:  # reversible until the period ends; fires .updated
            extra: dict[str, Any] = {"cancellation_details": details} if details else {}
            return self.update_subscription(
                id, idempotency_key=idempotency_key, cancel_at_period_end=True, **extra
            )
        params: SubscriptionCancelParams = {}
        if details:
            params["cancellation_details"] = details  # type: ignore[typeddict-item]
        # DELETE is idempotent by definition and Stripe ignores keys on it; a repeated cancel
        # answers an error, so a subscription already cancelled counts as success.
        try:
            return plain(
                self._call("cancel_subscription", lambda: self._v1.subscriptions.cancel(id, params))
            )
        except InvalidRequest:
            current = self.retrieve_subscription(id)
            if current.get("status") == "canceled":
                return current
            raise

    def apply_subscription_coupon(
        self, id: str, coupon_id: str, *, idempotency_key: str
    ) -> StripeDict:
        # `coupon` was removed from subscriptions in 2025-03-31; `discounts` replaces the list.
        return self.update_subscription(
            id, idempotency_key=idempotency_key, discounts=[{"coupon": coupon_id}]
        )

    # -- checkout, setup intents, payment methods

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
        # mode=setup saves a card for later off-session use; the SetupIntent carries the metadata
        # so `setup_intent.succeeded` can be tied back to the subscription.
        # https://docs.stripe.com/payments/checkout/subscriptions/update-payment-details
        params: SessionCreateParams = {
            "mode": "setup",
            "customer": customer_id,
            "allowed_payment_method_types": ["card"],
            "success_url": success_url,
            "cancel_url": cancel_url,
            "metadata": dict(metadata),
            "setup_intent_data": {"metadata": dict(metadata)},
        }
        if locale is not None:
            params["locale"] = locale
        options = self._key(idempotency_key)
        return plain(
            self._call(
                "create_checkout_session",
                lambda: self._v1.checkout.sessions.create(params, options),
            )
        )

    def retrieve_checkout_session(self, id: str) -> StripeDict:
        return plain(
            self._call(
                "retrieve_checkout_session",
                lambda: self._v1.checkout.sessions.retrieve(
                    id, {"expand": ["setup_intent.payment_method"]}
                ),
            )
        )

    def retrieve_setup_intent(self, id: str) -> StripeDict:
        return plain(
            self._call(
                "retrieve_setup_intent",
                lambda: self._v1.setup_intents.retrieve(id, {"expand": ["payment_method"]}),
            )
        )

    def retrieve_payment_method(self, id: str) -> StripeDict:
        return plain(
            self._call("retrieve_payment_method", lambda: self._v1.payment_methods.retrieve(id))
        )

    def list_customer_payment_methods(self, customer_id: str) -> list[StripeDict]:
        def page(cursor: str | None) -> stripe.ListObject[Any]:
            params: PaymentMethodListParams = {
                "customer": customer_id,
                "type": "card",
                "limit": self._page_size,
            }
            if cursor:
                params["starting_after"] = cursor
            return self._v1.payment_methods.list(params)

        return list(self._paginate("list_payment_methods", page, None))

    # -- paginated reads for the sync

    def _paginate(
        self,
        what: str,
        page: Callable[[str | None], stripe.ListObject[Any]],
        starting_after: str | None,
    ) -> Iterator[StripeDict]:
        # Pages are fetched one by one through _call (retries, error translation); the SDK's
        # auto_paging_iter would bypass both.
        cursor = starting_after
        while True:
            result = self._call(what, functools.partial(page, cursor))
            items = [plain(obj) for obj in result.data]
            yield from items
            if not result.has_more or not items:
                return
            cursor = items[-1]["id"]

    def iter_customers(self, starting_after: str | None = None) -> Iterator[StripeDict]:
        def page(cursor: str | None) -> stripe.ListObject[Any]:
            params: CustomerListParams = {"limit": self._page_size}
            if cursor:
                params["starting_after"] = cursor
            return self._v1.customers.list(params)

        return self._paginate("list_customers", page, starting_after)

    def iter_subscriptions(
        self, starting_after: str | None = None, status: str = "all"
    ) -> Iterator[StripeDict]:
        def page(cursor: str | None) -> stripe.ListObject[Any]:
            params: SubscriptionListParams = {"limit": self._page_size, "status": status}
            if cursor:
                params["starting_after"] = cursor
            return self._v1.subscriptions.list(params)

        return self._paginate("list_subscriptions", page, starting_after)

    def iter_invoices(self, status: str, starting_after: str | None = None) -> Iterator[StripeDict]:
        def page(cursor: str | None) -> stripe.ListObject[Any]:
            params: InvoiceListParams = {"limit": self._page_size, "status": status}
            if cursor:
                params["starting_after"] = cursor
            return self._v1.invoices.list(params)

        return self._paginate("list_invoices", page, starting_after)

    def iter_events(
        self, created_gte: int, starting_after: str | None = None
    ) -> Iterator[StripeDict]:
        def page(cursor: str | None) -> stripe.ListObject[Any]:
            params: EventListParams = {"limit": self._page_size, "created": {"gte": created_gte}}
            if cursor:
                params["starting_after"] = cursor
            return self._v1.events.list(params)

        return self._paginate("list_events", page, starting_after)

    def list_webhook_endpoints(self) -> list[StripeDict]:
        def page(cursor: str | None) -> stripe.ListObject[Any]:
            params: WebhookEndpointListParams = {"limit": self._page_size}
            if cursor:
                params["starting_after"] = cursor
            return self._v1.webhook_endpoints.list(params)

        return list(self._paginate("list_webhook_endpoints", page, None))


# mypy checks here that the adapter has every member of the Protocol with its exact signature.
_CONFORMS: type[StripeGateway] = StripeSdkGateway
