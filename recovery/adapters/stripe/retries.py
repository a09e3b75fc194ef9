"""How the SDK adapter reads Stripe's errors: into our `GatewayError`s, with whether and when
to try again (Stripe's `Stripe-Should-Retry` and `Retry-After` headers, else jittered backoff)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import stripe

from recovery.adapters.stripe.errors import (
    AccessDenied,
    AuthenticationRequired,
    CardDeclined,
    GatewayError,
    IdempotencyConflict,
    InvalidRequest,
    NotFound,
    RateLimited,
    Unavailable,
)
from recovery.adapters.stripe.protocol import StripeDict


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


def should_retry(exc: stripe.StripeError, error: GatewayError) -> bool:
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


def plain(obj: stripe.StripeObject) -> StripeDict:
    return obj.to_dict(recursive=True, for_json=True)
