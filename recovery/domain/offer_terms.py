"""The exact terms of an offer: what the subscriber is shown and what is applied in Stripe. Pure.

Stripe facts relied on (docs/stripe.md): a price change with the same interval keeps the billing
date and, with `create_prorations`, credits the unused time at the old price; a change of
interval (monthly -> yearly) moves the billing date to the switch and charges at once, less the
unused part of the current period when prorating.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from recovery.domain.offers import (
    OfferKind,
    OfferRules,
    Plan,
    SubscriptionFacts,
    add_months,
    monthly_amount,
)


@dataclass(frozen=True)
class OfferTerms:
    """What exactly is offered, as shown to the subscriber and applied in Stripe."""

    kind: OfferKind
    currency: str
    monthly_before: int
    monthly_after: int
    cadence_before: str
    # pause
    pause_months: tuple[int, ...] = ()
    pause_behavior: str | None = None
    # downgrade and longer term
    item_id: str | None = None
    quantity: int | None = None
    from_price: str | None = None
    to_price: str | None = None
    amount_before: int | None = None  # per current billing period
    amount_after: int | None = None  # per new billing period
    cadence_after: str | None = None
    proration_behavior: str | None = None
    credit: int | None = None  # unused time credited on today's invoice (longer term)
    charged_today: int | None = None  # longer term: before tax and customer balance
    next_charge_at: datetime | None = None
    savings_percent: int | None = None
    # discount
    coupon: str | None = None
    percent_off: float | None = None
    amount_off: int | None = None
    duration_months: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OfferTerms:
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        values["kind"] = OfferKind(values["kind"])
        values["pause_months"] = tuple(values.get("pause_months") or ())
        if values.get("next_charge_at"):
            values["next_charge_at"] = datetime.fromisoformat(values["next_charge_at"])
        return cls(**values)


def _unused_credit(plan: Plan, facts: SubscriptionFacts, now: datetime) -> int:
    start, end = facts.current_period_start, facts.current_period_end
    if start is None or end is None or end <= start or now >= end:
        return 0
    left = max((end - max(now, start)).total_seconds(), 0.0)
    return round(plan.amount * left / (end - start).total_seconds())


def terms_for(
    kind: OfferKind, rules: OfferRules, facts: SubscriptionFacts, now: datetime
) -> OfferTerms:
    """The terms of an offer the subscription is eligible for (check `eligibility` first)."""
    rule = rules.get(kind)
    base: dict[str, Any] = {
        "kind": kind,
        "currency": facts.currency,
        "monthly_before": facts.monthly,
        "cadence_before": facts.cadence,
    }
    if kind == OfferKind.PAUSE:
        # The plan resumes unchanged: the revenue is kept, only deferred.
        return OfferTerms(
            **base,
            monthly_after=facts.monthly,
            amount_before=facts.amount_per_period,
            pause_months=rule.pause_months,
            pause_behavior=rule.pause_behavior,
        )
    if kind == OfferKind.DISCOUNT:
        before = facts.monthly
        if rule.percent_off is not None:
            after = round(before * (100 - rule.percent_off) / 100)
        else:
            after = max(before - (rule.amount_off or 0), 0)
        return OfferTerms(
            **base,
            monthly_after=after,
            coupon=rule.coupon,
            percent_off=rule.percent_off,
            amount_off=rule.amount_off,
            duration_months=rule.duration_months,
        )
    plan = facts.single_plan
    switch = rule.switch_for(plan.price_id) if plan else None
    if plan is None or switch is None:
        raise ValueError(f"{kind} needs a single-item subscription with a mapped price")
    after = switch.to_unit_amount * plan.quantity
    common: dict[str, Any] = {
        "item_id": plan.item_id,
        "quantity": plan.quantity,
        "from_price": plan.price_id,
        "to_price": switch.to_price,
        "amount_before": plan.amount,
        "amount_after": after,
        "proration_behavior": rule.proration_behavior,
    }
    if kind == OfferKind.DOWNGRADE:
        return OfferTerms(
            **base,
            **common,
            monthly_after=monthly_amount(after, plan.interval, plan.interval_count),
            cadence_after=plan.cadence,
            next_charge_at=facts.current_period_end,
        )
    # Longer term: the billing date moves to today and the year is charged now, less the unused
    # part of the current period when prorating.
    credit = 0 if rule.proration_behavior == "none" else _unused_credit(plan, facts, now)
    yearly_before = plan.monthly * 12
    return OfferTerms(
        **base,
        **common,
        monthly_after=monthly_amount(after, "year", 1),
        cadence_after="year",
        credit=credit,
        charged_today=max(after - credit, 0),
        next_charge_at=add_months(now, 12),
        savings_percent=int((yearly_before - after) * 100 // yearly_before) if yearly_before else 0,
    )


def pause_until(now: datetime, months: int) -> datetime:
    return add_months(now, months)


def offer_ends_at(terms: OfferTerms, accepted_at: datetime, months: int | None) -> datetime | None:
    """Until when an accepted offer counts as "running" (no other offer meanwhile)."""
    if terms.kind == OfferKind.PAUSE and months:
        return pause_until(accepted_at, months)
    if terms.kind == OfferKind.DISCOUNT and terms.duration_months:
        return add_months(accepted_at, terms.duration_months)
    if terms.kind == OfferKind.LONGER_TERM:
        return add_months(accepted_at, 12)  # the discounted year just bought
    return None
