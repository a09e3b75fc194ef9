"""Retention offers: which one (if any) a subscriber may be shown. Pure. (Their exact terms:
`recovery.domain.offer_terms`.)

Inputs are plain facts (the subscription as mirrored, the customer's past accepted offers, the
time); outputs are decisions with the reason for a "no". Nothing here reads the clock, the
database or Stripe.
"""

from __future__ import annotations

import calendar
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum


class OfferKind(StrEnum):
    PAUSE = "pause"
    DOWNGRADE = "downgrade"
    LONGER_TERM = "longer_term"
    DISCOUNT = "discount"


# Billing cadences as the rules name them; Stripe says interval + interval_count.
CADENCES = ("day", "week", "month", "quarter", "year", "other")
# A discount is never granted twice to one customer within this many months (issue 5).
DISCOUNT_MIN_COOLDOWN_MONTHS = 12
# Offers only for subscriptions in good standing: not past due, unpaid, trialing or ended.
OFFERABLE_STATUSES = frozenset({"active"})


def cadence(interval: str | None, interval_count: int) -> str:
    if interval == "month" and interval_count == 3:
        return "quarter"
    if interval == "month" and interval_count == 12:
        return "year"
    if interval in ("day", "week", "month", "year") and interval_count == 1:
        return interval
    return "other"


def add_months(when: datetime, months: int) -> datetime:
    """The same day `months` later, clamped to the month's end (31 Jan + 1 month = 28/29 Feb)."""
    index = when.month - 1 + months
    year, month = when.year + index // 12, index % 12 + 1
    day = min(when.day, calendar.monthrange(year, month)[1])
    return when.replace(year=year, month=month, day=day)


def monthly_amount(amount: int, interval: str | None, interval_count: int) -> int:
    """A recurring amount (minor units per billing period) as an amount per month, rounded."""
    per_month = {"day": 365 / 12, "week": 52 / 12, "month": 1.0, "year": 1 / 12}.get(
        interval or "", 0.0
    )
    return round(amount * per_month / max(interval_count, 1))


# ---- rules --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PriceSwitch:
    """`from_price` may move to `to_price`, which costs `to_unit_amount` per its own period."""

    from_price: str
    to_price: str
    to_unit_amount: int


@dataclass(frozen=True)
class OfferRule:
    kind: OfferKind
    enabled: bool = True
    min_tenure_days: int = 0
    cadences: tuple[str, ...] = ()  # empty: any cadence
    cooldown_months: int = 12  # the same offer is not accepted twice by a customer within this
    # pause
    pause_months: tuple[int, ...] = ()
    pause_behavior: str = "void"
    reminder_days_before: int = 3
    # downgrade, longer term
    switches: tuple[PriceSwitch, ...] = ()
    proration_behavior: str = "create_prorations"
    # discount
    coupon: str = ""
    percent_off: float | None = None
    amount_off: int | None = None
    duration_months: int = 0

    def switch_for(self, price_id: str | None) -> PriceSwitch | None:
        return next((s for s in self.switches if s.from_price == price_id), None)


@dataclass(frozen=True)
class OfferRules:
    rules: tuple[OfferRule, ...] = field(default_factory=tuple)

    def get(self, kind: OfferKind) -> OfferRule:
        for rule in self.rules:
            if rule.kind == kind:
                return rule
        return OfferRule(kind=kind, enabled=False)


# ---- facts --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """One subscription item: its price and cadence."""

    item_id: str
    price_id: str | None
    unit_amount: int
    quantity: int
    interval: str | None
    interval_count: int = 1

    @property
    def amount(self) -> int:
        return self.unit_amount * self.quantity

    @property
    def cadence(self) -> str:
        return cadence(self.interval, self.interval_count)

    @property
    def monthly(self) -> int:
        return monthly_amount(self.amount, self.interval, self.interval_count)


@dataclass(frozen=True)
class SubscriptionFacts:
    id: str
    customer_id: str
    status: str
    currency: str
    plans: tuple[Plan, ...]
    started_at: datetime | None = None
    current_period_start: datetime | None = None
    current_period_end: datetime | None = None
    cancel_at_period_end: bool = False
    paused: bool = False

    @property
    def single_plan(self) -> Plan | None:
        return self.plans[0] if len(self.plans) == 1 else None

    @property
    def monthly(self) -> int:
        return sum(plan.monthly for plan in self.plans)

    @property
    def amount_per_period(self) -> int:
        return sum(plan.amount for plan in self.plans)

    @property
    def cadence(self) -> str:
        cadences = {plan.cadence for plan in self.plans}
        return cadences.pop() if len(cadences) == 1 else "other"


@dataclass(frozen=True)
class PastOffer:
    """An offer the customer accepted earlier; `ends_at` is when its effect stops (None: never
    "running", e.g. a downgrade is a new plan, not an ongoing offer)."""

    kind: OfferKind
    subscription_id: str
    accepted_at: datetime
    ends_at: datetime | None = None


# ---- eligibility --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Eligibility:
    kind: OfferKind
    eligible: bool
    reason: str  # "eligible", or why not: a short code tests and logs can compare


def _cooldown(rule: OfferRule) -> int:
    if rule.kind == OfferKind.DISCOUNT:
        return max(rule.cooldown_months, DISCOUNT_MIN_COOLDOWN_MONTHS)
    return rule.cooldown_months


def _why_not_subscription(
    facts: SubscriptionFacts, history: Sequence[PastOffer], now: datetime
) -> str | None:
    """Reasons no offer at all fits this subscription now."""
    if facts.status not in OFFERABLE_STATUSES:
        return f"status_{facts.status}"
    if facts.cancel_at_period_end:
        return "already_cancelling"
    if not facts.plans:
        return "no_items"
    if facts.paused:
        return "on_offer"  # collection is paused (by us or anyone else)
    for past in history:
        if past.subscription_id == facts.id and past.ends_at is not None and past.ends_at > now:
            return "on_offer"
    return None


def _why_not_offer(
    rule: OfferRule, facts: SubscriptionFacts, history: Sequence[PastOffer], now: datetime
) -> str | None:
    if not rule.enabled:
        return "disabled"
    started = facts.started_at
    if rule.min_tenure_days and (
        started is None or now - started < timedelta(days=rule.min_tenure_days)
    ):
        return "tenure"
    if rule.cadences and facts.cadence not in rule.cadences:
        return "cadence"
    cooldown = _cooldown(rule)
    for past in history:
        if past.kind == rule.kind and add_months(past.accepted_at, cooldown) > now:
            return "cooldown"
    plan = facts.single_plan
    if rule.kind == OfferKind.PAUSE:
        if not rule.pause_months:
            return "not_configured"
    elif rule.kind in (OfferKind.DOWNGRADE, OfferKind.LONGER_TERM):
        if plan is None:
            return "several_items"
        switch = rule.switch_for(plan.price_id)
        if switch is None:
            return "no_price_mapping"
        new_amount = switch.to_unit_amount * plan.quantity
        if rule.kind == OfferKind.DOWNGRADE and new_amount >= plan.amount:
            return "not_cheaper"
        if rule.kind == OfferKind.LONGER_TERM and (
            plan.cadence not in ("month", "quarter") or new_amount >= plan.monthly * 12
        ):
            return "not_cheaper" if plan.cadence in ("month", "quarter") else "cadence"
    elif rule.kind == OfferKind.DISCOUNT:
        if not rule.coupon or rule.duration_months <= 0:
            return "not_configured"
        if rule.percent_off is None and rule.amount_off is None:
            return "not_configured"
    return None


def eligibility(
    kind: OfferKind,
    rules: OfferRules,
    facts: SubscriptionFacts,
    history: Sequence[PastOffer],
    now: datetime,
) -> Eligibility:
    reason = _why_not_subscription(facts, history, now) or _why_not_offer(
        rules.get(kind), facts, history, now
    )
    return Eligibility(kind, reason is None, reason or "eligible")


def choose_offer(
    preferences: Sequence[OfferKind],
    allowed: Collection[OfferKind],
    rules: OfferRules,
    facts: SubscriptionFacts,
    history: Sequence[PastOffer],
    now: datetime,
) -> OfferKind | None:
    """The first offer in the reason's order of preference that the variant allows and the
    subscription qualifies for; None means no offer is shown."""
    for kind in preferences:
        if kind in allowed and eligibility(kind, rules, facts, history, now).eligible:
            return kind
    return None
