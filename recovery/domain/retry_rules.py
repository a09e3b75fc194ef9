"""The shape of the ``[retry]`` rules: every setting the retry policy reads, checked when built.

Pure; parsed from the rules file by ``recovery.rules.parse_retry_rules``. Facts behind the
defaults: docs/stripe.md, card-networks.md, retry-evidence.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from recovery.domain.declines import normalize_brand
from recovery.domain.paydays import WEEKDAY_NAMES

RetryOwner = Literal["recovery", "stripe"]
EndOfDunning = Literal["cancel_subscription", "mark_uncollectible", "leave_past_due", "offer_pause"]
Funding = Literal["credit", "debit", "prepaid", "unknown"]


class RulesError(ValueError):
    """A ``[retry]`` setting is unknown or has the wrong type or value; the message names it."""


@dataclass(frozen=True, slots=True)
class NetworkCaps:
    """Most attempts on one card in any 30 days, ours and Stripe's together."""

    visa: int = 20  # 15 reattempts per 30 days, 20 from 25 May 2025 (Cielo, TabaPay)
    mastercard: int = 35  # TPE: fee above 35 declines per card, merchant, amount, 30 days
    default: int = 15  # other networks publish nothing we found: Visa's older, stricter limit

    def for_brand(self, brand: str | None) -> int:
        name = normalize_brand(brand)
        if name == "visa":
            return self.visa
        if name == "mastercard":
            return self.mastercard
        return self.default


@dataclass(frozen=True, slots=True)
class RetryRules:
    """The ``[retry]`` section of the rules file (parsed by `recovery.rules.parse_retry_rules`);
    each default is explained there."""

    window_days: int = 28  # Churn Buster's default campaign; 42% of recoveries come after day 14
    max_attempts: int = 8  # per card, first charge included: Stripe's "at most 8"
    network_caps: NetworkCaps = NetworkCaps()
    soft_first_retry_hours: int = 22  # about a day, a little earlier in the day each time
    min_gap_hours: int = 20  # never two charges on one invoice closer than this
    payday_targeting: bool = True  # for insufficient_funds only
    payday_days_of_month: tuple[int, ...] = (1, 15)
    payday_last_business_day: bool = True
    payday_weekdays: tuple[str, ...] = ("friday",)
    local_hour_start: int = 8  # customer-local morning window for payday tries: [start, end)
    local_hour_end: int = 10
    business_days: bool = True  # scheduled tries avoid the customer's weekends and holidays
    retry_owner: RetryOwner = "recovery"
    end_of_dunning: EndOfDunning = "cancel_subscription"  # Stripe's default end state
    # offer_pause: the final notice offers a pause of 1..pause_months months instead
    pause_months: int = 3

    def __post_init__(self) -> None:
        _check(1 <= self.window_days <= 60, "window_days", "1..60 (Stripe and Recurly stop by 60)")
        _check(1 <= self.max_attempts <= 20, "max_attempts", "1..20 (Recurly's hard stop)")
        for brand in ("visa", "mastercard", "default"):
            cap = getattr(self.network_caps, brand)
            _check(cap >= 1, f"network_caps.{brand}", "at least 1")
        _check(1 <= self.soft_first_retry_hours <= 24 * 14, "soft_first_retry_hours", "1..336")
        _check(
            1 <= self.min_gap_hours <= self.soft_first_retry_hours,
            "min_gap_hours",
            "1..soft_first_retry_hours",
        )
        days = self.payday_days_of_month
        _check(all(1 <= d <= 31 for d in days), "payday_days_of_month", "days 1..31")
        names = self.payday_weekdays
        _check(all(n in WEEKDAY_NAMES for n in names), "payday_weekdays", "English day names")
        _check(0 <= self.local_hour_start <= 23, "local_hour_start", "0..23")
        _check(
            self.local_hour_start < self.local_hour_end <= 24,
            "local_hour_end",
            "after local_hour_start and at most 24",
        )
        _check(self.retry_owner in get_args(RetryOwner), "retry_owner", "recovery or stripe")
        _check(
            self.end_of_dunning in get_args(EndOfDunning),
            "end_of_dunning",
            " or ".join(get_args(EndOfDunning)),
        )
        # Stripe's pause_collection takes any resumes_at; a year is where a pause stops being
        # one and becomes a cancellation nobody confirmed.
        _check(1 <= self.pause_months <= 12, "pause_months", "1..12")


def _check(ok: bool, key: str, expected: str) -> None:
    if not ok:
        raise RulesError(f"retry.{key}: expected {expected}")
