""" "I've contacted my bank - try again": whether the customer's word plans a try, and when.
Pure. A press counts only for a decline only their bank can clear (`needs_customer`), at most
BANK_CALLS_PER_CASE times a case; the try (`retry_policy.decide_next_retry`, which reads the
word from `RetryContext.bank_calls`) must fit within BANK_CALL_HORIZON inside the window, the
card's budget and the networks' caps and waits - or the customer is told so rather than
promised a try."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from recovery.domain.retry_policy import (
    BANK_CALL_DELAY,
    RetryContext,
    RetryRules,
    decide_next_retry,
)

__all__ = [
    "BANK_CALLS_PER_CASE",
    "BANK_CALL_DELAY",
    "BANK_CALL_HORIZON",
    "BankCallAnswer",
    "answer_bank_call",
]

BANK_CALL_HORIZON = timedelta(hours=1)  # "we'll try again within the hour"
BANK_CALLS_PER_CASE = 2  # the bound: a third word is not another try


@dataclass(frozen=True, slots=True)
class BankCallAnswer:
    """A try at `at` (`refusal` None), or why not: planned (a try is already planned, at
    `at`), limit, not_needed (this card is not charged again) or no_room (nothing fits within
    the hour)."""

    at: datetime | None
    refusal: str | None
    reason: str


def answer_bank_call(
    ctx: RetryContext, rules: RetryRules, now: datetime, calls_so_far: int
) -> BankCallAnswer:
    """What a press of the bank button now gets."""
    before = decide_next_retry(ctx, rules, now)
    if before.at is not None:
        return BankCallAnswer(before.at, "planned", before.reason)
    if calls_so_far >= BANK_CALLS_PER_CASE:
        return BankCallAnswer(None, "limit", f"already pressed {calls_so_far} times")
    if before.stop or before.wait_for_new_card:
        return BankCallAnswer(None, "not_needed", before.reason)
    after = decide_next_retry(replace(ctx, bank_calls=(*ctx.bank_calls, now)), rules, now)
    if after.at is None or after.at > now + BANK_CALL_HORIZON:
        return BankCallAnswer(None, "no_room", after.reason)
    return BankCallAnswer(after.at, None, after.reason)
