"""The shadow comparison's pure part: which of Stripe's retries our policy would not have made,
and our own plan from the first failure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from recovery.domain.declines import Decline
from recovery.domain.retry_policy import Attempt, CardInfo, RetryContext, RetryRules
from recovery.domain.shadow_plan import (
    NETWORK_RULE,
    POLICY,
    our_plan,
    stripe_retries_we_would_not_make,
)

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
CARD = "fp_visa"


def attempt(at: datetime, decline: Decline | None, *, on_invoice: bool = True) -> Attempt:
    return Attempt(
        at=at,
        card_fingerprint=CARD,
        card_brand="visa",
        decline=decline,
        succeeded=decline is None,
        by="stripe",
        on_this_invoice=on_invoice,
    )


def context(attempts: list[Attempt]) -> RetryContext:
    return RetryContext(
        case_opened_at=T0,
        attempts=attempts,
        card=CardInfo("visa", "credit", CARD),
        card_changed_since_last_failure=False,
        customer_timezone="UTC",
        amount=1900,
        currency="usd",
    )


SOFT = Decline(failure_code="card_declined", decline_code="generic_decline", card_brand="visa")


def test_a_retry_over_the_visa_cap_is_against_a_network_rule() -> None:
    # 19 attempts on the card elsewhere in the last 30 days and this invoice's failure: 20
    elsewhere = [
        attempt(T0 - timedelta(days=20, hours=i), SOFT, on_invoice=False) for i in range(19)
    ]
    attempts = [*elsewhere, attempt(T0, SOFT), attempt(T0 + timedelta(days=2), SOFT)]
    [avoided] = stripe_retries_we_would_not_make(context(attempts), RetryRules(), CARD)
    assert avoided.kind == NETWORK_RULE
    assert "visa cap of 20 attempts on a card in 30 days" in avoided.why


def test_a_category_1_code_is_never_retried_and_a_soft_one_is() -> None:
    stolen = Decline(failure_code="card_declined", network_decline_code="04", card_brand="visa")
    attempts = [attempt(T0, stolen), attempt(T0 + timedelta(days=3), stolen)]
    [avoided] = stripe_retries_we_would_not_make(context(attempts), RetryRules(), CARD)
    assert avoided.kind == NETWORK_RULE and "category 1" in avoided.why
    assert our_plan(context(attempts), RetryRules(), T0).retries == ()

    soft = [attempt(T0, SOFT), attempt(T0 + timedelta(days=3), SOFT)]
    assert stripe_retries_we_would_not_make(context(soft), RetryRules(), CARD) == []
    plan = our_plan(context(soft), RetryRules(), T0)
    assert 1 <= len(plan.retries) <= RetryRules().max_attempts - 1  # the first charge counts
    times = [r.at for r in plan.retries]
    assert times == sorted(set(times))
    assert plan.retries[-1].at < T0 + timedelta(days=RetryRules().window_days)


def test_a_retry_after_the_window_is_our_policy_not_a_network_rule() -> None:
    attempts = [attempt(T0, SOFT), attempt(T0 + timedelta(days=40), SOFT)]
    [avoided] = stripe_retries_we_would_not_make(context(attempts), RetryRules(), CARD)
    assert avoided.kind == POLICY and "window ended" in avoided.why


def test_our_plan_stops_where_the_invoice_was_settled() -> None:
    soft = [attempt(T0, SOFT)]
    paid_at = T0 + timedelta(days=2)
    plan = our_plan(context(soft), RetryRules(), T0, until=paid_at)
    assert all(r.at < paid_at for r in plan.retries)
    assert plan.stopped == "the invoice was settled before our next retry"


def test_a_retry_we_would_not_make_that_paid_is_marked_so() -> None:
    # Only the customer can help (call their bank); Stripe retried the next day and it paid:
    # the report shows what following our policy would have cost.
    call = Decline(failure_code="card_declined", decline_code="call_issuer", card_brand="visa")
    attempts = [attempt(T0, call), attempt(T0 + timedelta(days=1), None)]
    [avoided] = stripe_retries_we_would_not_make(context(attempts), RetryRules(), CARD)
    assert avoided.kind == POLICY and avoided.paid
    assert "call their bank" in avoided.why
