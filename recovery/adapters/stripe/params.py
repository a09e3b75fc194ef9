"""Argument checks shared by the SDK adapter and the fake, so both refuse what Stripe refuses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stripe.params import SubscriptionUpdateParams

from recovery.adapters.stripe.errors import InvalidRequest

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
