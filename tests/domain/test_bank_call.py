""" "I've contacted my bank - try again": the retry policy plans one try within the hour for a
decline only the customer's bank can clear - at most twice per case, never over a network cap,
past the card's budget or the window."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from recovery.domain.bank_calls import BANK_CALL_DELAY, BANK_CALL_HORIZON, answer_bank_call
from recovery.domain.retry_policy import RetryRules, decide_next_retry
from tests.domain.test_retry_policy import T0, context, fail

PROPERTY = settings(max_examples=200, derandomize=True, deadline=None)


def test_a_call_issuer_decline_waits_until_the_customer_says_they_called() -> None:
    ctx = context([fail(T0, "call_issuer")])
    now = T0 + timedelta(days=2)  # a Wednesday
    waiting = decide_next_retry(ctx, RetryRules(), now)
    assert waiting.at is None and "waiting for the customer" in waiting.reason

    answer = answer_bank_call(ctx, RetryRules(), now, 0)
    assert answer.refusal is None and answer.at == now + BANK_CALL_DELAY
    said = replace(ctx, bank_calls=(now,))
    planned = decide_next_retry(said, RetryRules(), now)
    assert planned.at == now + BANK_CALL_DELAY
    assert "the customer contacted their bank" in planned.reason
    # asked again before the try ran: the same try, not a second one
    assert answer_bank_call(said, RetryRules(), now, 1).refusal == "planned"


def test_a_saturday_call_is_tried_on_saturday() -> None:
    """Business days are for guessing when money arrives; the customer has just acted."""
    saturday = T0 + timedelta(days=5)
    answer = answer_bank_call(context([fail(T0, "call_issuer")]), RetryRules(), saturday, 0)
    assert answer.at == saturday + BANK_CALL_DELAY


def test_after_a_try_that_failed_again_the_word_counts_once_more_then_never() -> None:
    first = T0 + timedelta(days=1)
    tried = first + BANK_CALL_DELAY
    ctx = context([fail(T0, "call_issuer"), fail(tried, "call_issuer", by="recovery")])
    ctx = replace(ctx, bank_calls=(first,))
    now = tried + timedelta(hours=3)
    assert decide_next_retry(ctx, RetryRules(), now).at is None  # the old word is spent
    assert answer_bank_call(ctx, RetryRules(), now, 1).refusal is None
    assert answer_bank_call(ctx, RetryRules(), now, 2).refusal == "limit"


def test_not_offered_for_a_decline_that_needs_a_new_card() -> None:
    ctx = context([fail(T0, "expired_card")])
    assert answer_bank_call(ctx, RetryRules(), T0 + timedelta(hours=2), 0).refusal == "not_needed"


def test_no_try_when_the_window_ends_within_the_hour() -> None:
    rules = RetryRules(window_days=3)
    now = T0 + timedelta(days=3) - timedelta(minutes=5)
    answer = answer_bank_call(context([fail(T0, "call_issuer")]), rules, now, 0)
    assert (answer.at, answer.refusal) == (None, "no_room")


def test_no_try_over_the_card_networks_cap() -> None:
    """Fifteen declines of a card in the last 30 days on a network with a cap of 15: the next
    try would be over it until the oldest leaves the 30 days - not within the hour."""
    now = T0 + timedelta(days=20)
    others = [
        fail(T0 + timedelta(days=1, hours=i), "do_not_honor", brand="discover", invoice=False)
        for i in range(14)
    ]
    ctx = replace(
        context([fail(T0, "call_issuer", brand="discover"), *others]),
        card=replace(context([]).card, brand="discover"),  # type: ignore[type-var]
    )
    answer = answer_bank_call(ctx, RetryRules(max_attempts=20), now, 0)
    assert (answer.at, answer.refusal) == (None, "no_room")
    assert "held by the discover cap of 15" in answer.reason
    fewer = replace(ctx, attempts=ctx.attempts[:6])
    assert answer_bank_call(fewer, RetryRules(max_attempts=20), now, 0).refusal is None


@PROPERTY
@given(
    hours=st.integers(min_value=1, max_value=27 * 24),
    calls=st.integers(min_value=0, max_value=3),
    caps=st.integers(min_value=1, max_value=20),
)
def test_a_planned_try_is_always_within_the_hour_the_window_and_the_caps(
    hours: int, calls: int, caps: int
) -> None:
    rules = RetryRules(network_caps=replace(RetryRules().network_caps, visa=caps))
    now = T0 + timedelta(hours=hours)
    ctx = context([fail(T0, "call_issuer")])
    answer = answer_bank_call(ctx, rules, now, calls)
    if answer.refusal is None:
        assert answer.at is not None and now < answer.at <= now + BANK_CALL_HORIZON
        assert answer.at < T0 + timedelta(days=rules.window_days)
        assert calls < 2
        assert caps >= 2  # the decline itself counts: a cap of 1 leaves no try
    else:
        assert answer.at is None or answer.refusal == "planned"
