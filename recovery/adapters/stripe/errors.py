"""The errors every Stripe gateway raises instead of SDK exceptions: a small hierarchy the
services can act on (declined, needs authentication, not found, transient...)."""

from __future__ import annotations

from typing import Any


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
