"""Every call this service makes to Stripe, behind one Protocol, and its real adapter.

`StripeGateway` is the contract; `StripeSdkGateway` implements it with the official SDK
(`stripe.StripeClient`, `client.v1.*` services) and `stripe_fake.FakeStripeGateway` in memory.
Both return plain data (the JSON shape webhooks carry) so `recovery.domain.stripe_objects` maps
API results and event payloads alike, and both raise the small `GatewayError` hierarchy below
instead of SDK exceptions.

Writes take a caller-chosen `idempotency_key`: Stripe caches the first result of a POST under its
key for at least 24 h, so a retry - ours after a timeout, or a worker re-running an action after a
crash - can never charge twice. https://docs.stripe.com/api/idempotent_requests
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

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
)
from stripe.params.checkout import SessionCreateParams

log = logging.getLogger(__name__)

# The API version stripe-python 16.1.0 is generated for (`stripe.api_version`). Requests and the
# SDK's typed params agree only at this version; bump both together.
PINNED_API_VERSION = "2026-10-28.endive"
PAGE_SIZE = 100  # Stripe's maximum `limit` for list calls
DEFAULT_TIMEOUT = (5.0, 40.0)  # (connect, read) seconds; the SDK's default is 80 s for both

StripeDict = dict[str, Any]

# Parameter names the pinned API accepts on POST /v1/subscriptions/{id}. RequestOptions keys are
# request options (headers), never body parameters.
SUBSCRIPTION_UPDATE_KEYS = frozenset(SubscriptionUpdateParams.__optional_keys__) | frozenset(
    SubscriptionUpdateParams.__required_keys__
)
PAUSE_BEHAVIORS = frozenset({"void", "keep_as_draft", "mark_uncollectible"})
PRORATION_BEHAVIORS = frozenset({"create_prorations", "none", "always_invoice"})
CANCELLATION_FEEDBACK = frozenset(
    {
        "customer_service",
        "low_quality",
        "missing_features",
        "other",
        "switched_service",
        "too_complex",
        "too_expensive",
        "unused",
    }
)


# ---- errors -------------------------------------------------------------------------------------


class GatewayError(Exception):
    """A Stripe call failed. `transient` errors may succeed if retried later with the same key."""

    transient = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        http_status: int | None = None,
        request_id: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.http_status = http_status
        self.request_id = request_id
        self.param = param


class PaymentFailed(GatewayError):
    """A payment attempt did not succeed; the decline details as Stripe reported them."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        decline_code: str | None = None,
        advice_code: str | None = None,
        network_advice_code: str | None = None,
        network_decline_code: str | None = None,
        charge_id: str | None = None,
        payment_intent_id: str | None = None,
        payment_method_id: str | None = None,
        card_brand: str | None = None,
        http_status: int | None = 402,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, code=code, http_status=http_status, request_id=request_id)
        self.decline_code = decline_code
        self.advice_code = advice_code
        self.network_advice_code = network_advice_code
        self.network_decline_code = network_decline_code
        self.charge_id = charge_id
        self.payment_intent_id = payment_intent_id
        self.payment_method_id = payment_method_id
        self.card_brand = card_brand


class CardDeclined(PaymentFailed):
    """The issuer, the network or Stripe's risk checks declined the charge."""


class AuthenticationRequired(PaymentFailed):
    """The customer must authenticate (3-D Secure) on the hosted invoice page."""

    def __init__(
        self, message: str, *, hosted_invoice_url: str | None = None, **fields: Any
    ) -> None:
        super().__init__(message, **fields)
        self.hosted_invoice_url = hosted_invoice_url


class NotFound(GatewayError):
    pass


class InvalidRequest(GatewayError):
    pass


class IdempotencyConflict(InvalidRequest):
    """The key was used before with other parameters (Stripe's `idempotency_error`)."""


class AccessDenied(GatewayError):
    """The API key is wrong, revoked or lacks the permission (401/403): fix the configuration."""


class TransientError(GatewayError):
    transient = True

    def __init__(self, message: str, *, retry_after: float | None = None, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.retry_after = retry_after


class RateLimited(TransientError):
    """429: too many requests, or `lock_timeout` (concurrent writes to one object)."""


class Unavailable(TransientError):
    """5xx, 409 conflicts, timeouts and connection failures."""


# ---- the contract -------------------------------------------------------------------------------


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


# ---- argument checks shared with the fake -------------------------------------------------------


def check_subscription_params(params: Mapping[str, Any]) -> None:
    unknown = sorted(set(params) - SUBSCRIPTION_UPDATE_KEYS)
    if unknown:
        raise InvalidRequest(
            f"Received unknown parameter: {unknown[0]}", code="parameter_unknown", param=unknown[0]
        )


def check_choice(value: str | None, allowed: frozenset[str], param: str) -> None:
    if value is not None and value not in allowed:
        raise InvalidRequest(
            f"Invalid {param}: must be one of {', '.join(sorted(allowed))}",
            code="parameter_invalid_string",
            param=param,
        )


def cancellation_details(feedback: str | None, comment: str | None) -> dict[str, str] | None:
    check_choice(feedback, CANCELLATION_FEEDBACK, "cancellation_details[feedback]")
    details = {k: v for k, v in (("feedback", feedback), ("comment", comment)) if v is not None}
    return details or None


# ---- retries ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: attempt n waits initial * 2^(n-1), capped, times U(0.5, 1)
    so that many clients throttled at once do not come back in lockstep."""

    initial: float = 0.5
    cap: float = 8.0

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        base = min(self.initial * 2.0 ** max(attempt - 1, 0), self.cap)
        wait = base * rng.uniform(0.5, 1.0)
        if retry_after is not None:
            wait = max(wait, min(retry_after, 60.0))
        return wait


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    for key, value in (headers or {}).items():
        if key.lower() == name:
            return value
    return None


def _id(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, Mapping) and isinstance(value.get("id"), str):
        return cast(str, value["id"])
    return None


def translate_error(exc: stripe.StripeError) -> GatewayError:
    """An SDK exception as one of ours, keeping every decline field Stripe sent."""
    body = exc.json_body.get("error") if isinstance(exc.json_body, dict) else None
    error: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
    message = str(error.get("message") or exc.user_message or exc.__class__.__name__)
    status = exc.http_status
    code = error.get("code") or exc.code
    common: dict[str, Any] = {"http_status": status, "request_id": exc.request_id}
    retry_after_header = _header(exc.headers, "retry-after") or ""
    retry_after = float(retry_after_header) if retry_after_header.isdigit() else None
    intent = error.get("payment_intent")
    intent = intent if isinstance(intent, Mapping) else {}
    if isinstance(exc, stripe.CardError) or error.get("type") == "card_error" or status == 402:
        last = intent.get("last_payment_error")
        last = last if isinstance(last, Mapping) else {}
        method = error.get("payment_method") or last.get("payment_method")
        card = method.get("card") if isinstance(method, Mapping) else None
        fields: dict[str, Any] = {
            "code": code,
            "decline_code": error.get("decline_code") or last.get("decline_code"),
            "advice_code": error.get("advice_code") or last.get("advice_code"),
            "network_advice_code": error.get("network_advice_code")
            or last.get("network_advice_code"),
            "network_decline_code": error.get("network_decline_code")
            or last.get("network_decline_code"),
            "charge_id": _id(error.get("charge")) or _id(intent.get("latest_charge")),
            "payment_intent_id": _id(intent),
            "payment_method_id": _id(method),
            "card_brand": card.get("brand") if isinstance(card, Mapping) else None,
            **common,
        }
        # Off-session payments needing 3-D Secure: the invoice-level code, the decline code
        # `authentication_required`, or an intent left in requires_action.
        # https://docs.stripe.com/billing/subscriptions/overview#settings
        if (
            code in ("invoice_payment_intent_requires_action", "authentication_required")
            or fields["decline_code"] == "authentication_required"
            or intent.get("status") == "requires_action"
        ):
            return AuthenticationRequired(message, **fields)
        return CardDeclined(message, **fields)
    if isinstance(exc, stripe.RateLimitError) or status == 429:
        return RateLimited(message, code=code, retry_after=retry_after, **common)
    if isinstance(exc, stripe.IdempotencyError) or error.get("type") == "idempotency_error":
        return IdempotencyConflict(message, code=code or "idempotency_error", **common)
    if isinstance(exc, stripe.APIConnectionError):
        return Unavailable(message, code=code, **common)
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return AccessDenied(message, code=code, **common)
    if status == 404:
        return NotFound(message, code=code, param=error.get("param"), **common)
    if status == 409 or (status is not None and status >= 500):
        return Unavailable(message, code=code, retry_after=retry_after, **common)
    if isinstance(exc, stripe.InvalidRequestError) or (status is not None and status < 500):
        return InvalidRequest(message, code=code, param=error.get("param"), **common)
    return Unavailable(message, code=code, **common)


def _should_retry(exc: stripe.StripeError, error: GatewayError) -> bool:
    # Stripe says when a retry cannot help (e.g. a 500 whose result is already cached under the
    # key) or will help (lock_timeout); otherwise transient errors are retried.
    advice = _header(exc.headers, "stripe-should-retry")
    if advice == "false":
        return False
    if advice == "true":
        return True
    if isinstance(exc, stripe.APIConnectionError):
        return exc.should_retry  # timeouts and refused connections, not TLS failures
    return error.transient


T = TypeVar("T")


def _plain(obj: stripe.StripeObject) -> StripeDict:
    return obj.to_dict(recursive=True, for_json=True)


# ---- the real adapter ---------------------------------------------------------------------------


class StripeSdkGateway:
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
        self.http_client = http_client or stripe.RequestsClient(timeout=timeout)
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
        while True:
            try:
                return request()
            except stripe.StripeError as exc:
                error = translate_error(exc)
                if attempt >= self.max_retries or not _should_retry(exc, error):
                    raise error from exc
                attempt += 1
                retry_after = getattr(error, "retry_after", None)
                wait = self._backoff.delay(attempt, self._rng, retry_after)
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
        return _plain(self._call("retrieve_invoice", lambda: self._v1.invoices.retrieve(id)))

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
        return _plain(invoice)

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
        return _plain(
            self._call("update_invoice", lambda: self._v1.invoices.update(id, params, options))
        )

    def mark_uncollectible(self, id: str, *, idempotency_key: str) -> StripeDict:
        options = self._key(idempotency_key)
        return _plain(
            self._call(
                "mark_uncollectible",
                lambda: self._v1.invoices.mark_uncollectible(id, None, options),
            )
        )

    # -- customers

    def retrieve_customer(self, id: str) -> StripeDict:
        return _plain(self._call("retrieve_customer", lambda: self._v1.customers.retrieve(id)))

    def update_customer_default_payment_method(
        self, customer_id: str, pm_id: str, *, idempotency_key: str
    ) -> StripeDict:
        params: CustomerUpdateParams = {"invoice_settings": {"default_payment_method": pm_id}}
        options = self._key(idempotency_key)
        return _plain(
            self._call(
                "update_customer",
                lambda: self._v1.customers.update(customer_id, params, options),
            )
        )

    # -- subscriptions

    def retrieve_subscription(self, id: str) -> StripeDict:
        return _plain(
            self._call("retrieve_subscription", lambda: self._v1.subscriptions.retrieve(id))
        )

    def update_subscription(self, id: str, *, idempotency_key: str, **params: Any) -> StripeDict:
        check_subscription_params(params)
        typed = cast(SubscriptionUpdateParams, params)
        options = self._key(idempotency_key)
        return _plain(
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
            return _plain(
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
        return _plain(
            self._call(
                "create_checkout_session",
                lambda: self._v1.checkout.sessions.create(params, options),
            )
        )

    def retrieve_checkout_session(self, id: str) -> StripeDict:
        return _plain(
            self._call(
                "retrieve_checkout_session",
                lambda: self._v1.checkout.sessions.retrieve(
                    id, {"expand": ["setup_intent.payment_method"]}
                ),
            )
        )

    def retrieve_setup_intent(self, id: str) -> StripeDict:
        return _plain(
            self._call(
                "retrieve_setup_intent",
                lambda: self._v1.setup_intents.retrieve(id, {"expand": ["payment_method"]}),
            )
        )

    def retrieve_payment_method(self, id: str) -> StripeDict:
        return _plain(
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
            items = [_plain(obj) for obj in result.data]
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
