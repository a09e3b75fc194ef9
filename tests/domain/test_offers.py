"""Offer eligibility, choice and terms: the pure core, table-driven."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from recovery.domain.offer_terms import offer_ends_at, terms_for
from recovery.domain.offers import (
    OfferKind,
    OfferRule,
    OfferRules,
    PastOffer,
    Plan,
    PriceSwitch,
    SubscriptionFacts,
    add_months,
    choose_offer,
    eligibility,
    monthly_amount,
)

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
P, D, L, X = OfferKind.PAUSE, OfferKind.DOWNGRADE, OfferKind.LONGER_TERM, OfferKind.DISCOUNT

RULES = OfferRules(
    (
        OfferRule(P, cadences=("month", "quarter"), cooldown_months=6, pause_months=(1, 2, 3)),
        OfferRule(
            D,
            cooldown_months=6,
            switches=(PriceSwitch("price_pro", "price_basic", 900),),
        ),
        OfferRule(
            L,
            cadences=("month", "quarter"),
            switches=(PriceSwitch("price_pro", "price_pro_year", 19200),),
        ),
        OfferRule(
            X,
            min_tenure_days=30,
            cadences=("month",),
            cooldown_months=6,  # below the floor: a discount is still never twice a year
            coupon="STAY25",
            percent_off=25,
            duration_months=3,
        ),
    )
)

PRO = Plan("si_1", "price_pro", 2000, 1, "month")
FACTS = SubscriptionFacts(
    id="sub_1",
    customer_id="cus_1",
    status="active",
    currency="usd",
    plans=(PRO,),
    started_at=NOW - timedelta(days=200),
    current_period_start=NOW - timedelta(days=10),
    current_period_end=NOW + timedelta(days=20),
)


def past(kind: OfferKind, months_ago: int, ends_in_days: int | None = None) -> PastOffer:
    ends = None if ends_in_days is None else NOW + timedelta(days=ends_in_days)
    return PastOffer(kind, "sub_1", add_months(NOW, -months_ago), ends)


YEARLY = Plan("si_1", "price_pro", 20000, 1, "year")
CASES: list[tuple[str, OfferKind, dict[str, Any], list[PastOffer], str]] = [
    # (case, offer, changes to the facts, history, expected)
    ("pause fits", P, {}, [], "eligible"),
    ("past due", P, {"status": "past_due"}, [], "status_past_due"),
    ("unpaid", D, {"status": "unpaid"}, [], "status_unpaid"),
    ("trialing", X, {"status": "trialing"}, [], "status_trialing"),
    ("already set to cancel", P, {"cancel_at_period_end": True}, [], "already_cancelling"),
    ("already paused", D, {"paused": True}, [], "on_offer"),
    ("a discount still running", P, {}, [past(X, 1, ends_in_days=30)], "on_offer"),
    ("a past offer that ended", P, {}, [past(X, 14, ends_in_days=-300)], "eligible"),
    ("pause again within 6 months", P, {}, [past(P, 3, ends_in_days=-30)], "cooldown"),
    ("pause again after 7 months", P, {}, [past(P, 7, ends_in_days=-150)], "eligible"),
    ("pause on a yearly plan", P, {"plans": (YEARLY,)}, [], "cadence"),
    ("pause on a quarterly plan", P, {"plans": (replace(PRO, interval_count=3),)}, [], "eligible"),
    ("downgrade fits", D, {}, [], "eligible"),
    (
        "downgrade: price not mapped",
        D,
        {"plans": (replace(PRO, price_id="x"),)},
        [],
        "no_price_mapping",
    ),
    (
        "downgrade: several items",
        D,
        {"plans": (PRO, replace(PRO, item_id="si_2"))},
        [],
        "several_items",
    ),
    ("downgrade: not cheaper", D, {"plans": (replace(PRO, unit_amount=800),)}, [], "not_cheaper"),
    ("downgrade again soon", D, {}, [past(D, 2)], "cooldown"),
    ("longer term fits", L, {}, [], "eligible"),
    ("longer term on a yearly plan", L, {"plans": (YEARLY,)}, [], "cadence"),
    ("longer term not cheaper", L, {"plans": (replace(PRO, unit_amount=1500),)}, [], "not_cheaper"),
    ("longer term within its first year", D, {}, [past(L, 5, ends_in_days=200)], "on_offer"),
    ("discount fits", X, {}, [], "eligible"),
    ("discount: too new", X, {"started_at": NOW - timedelta(days=10)}, [], "tenure"),
    ("discount: start unknown", X, {"started_at": None}, [], "tenure"),
    ("discount after 11 months", X, {}, [past(X, 11, ends_in_days=-240)], "cooldown"),
    ("discount after 13 months", X, {}, [past(X, 13, ends_in_days=-300)], "eligible"),
    ("discount on a yearly plan", X, {"plans": (YEARLY,)}, [], "cadence"),
    ("no items", P, {"plans": ()}, [], "no_items"),
]


@pytest.mark.parametrize(
    ("case", "kind", "changes", "history", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_eligibility(
    case: str, kind: OfferKind, changes: dict[str, Any], history: list[PastOffer], expected: str
) -> None:
    result = eligibility(kind, RULES, replace(FACTS, **changes), history, NOW)
    assert result.reason == expected
    assert result.eligible is (expected == "eligible")


def test_a_disabled_or_unconfigured_offer_is_never_shown() -> None:
    disabled = OfferRules((replace(RULES.get(P), enabled=False),))
    assert eligibility(P, disabled, FACTS, [], NOW).reason == "disabled"
    no_coupon = OfferRules((replace(RULES.get(X), coupon=""),))
    assert eligibility(X, no_coupon, FACTS, [], NOW).reason == "not_configured"
    assert eligibility(D, OfferRules(()), FACTS, [], NOW).reason == "disabled"


CHOICES: list[tuple[str, list[OfferKind], set[OfferKind], dict[str, Any], OfferKind | None]] = [
    ("first preference", [D, L, X, P], {P, D, L, X}, {}, D),
    ("variant without downgrade", [D, L, X, P], {P, L, X}, {}, L),
    ("hold-out variant", [D, L, X, P], set(), {}, None),
    ("reason with no offers", [], {P, D, L, X}, {}, None),
    (
        "skip what does not fit",
        [D, L, P],
        {P, D, L, X},
        {"plans": (replace(PRO, price_id="x"),)},
        P,
    ),
    (
        "nothing fits a past-due subscription",
        [D, L, X, P],
        {P, D, L, X},
        {"status": "past_due"},
        None,
    ),
]


@pytest.mark.parametrize(
    ("case", "prefs", "allowed", "changes", "expected"), CHOICES, ids=[c[0] for c in CHOICES]
)
def test_choose_offer(
    case: str,
    prefs: list[OfferKind],
    allowed: set[OfferKind],
    changes: dict[str, Any],
    expected: OfferKind | None,
) -> None:
    assert choose_offer(prefs, allowed, RULES, replace(FACTS, **changes), [], NOW) == expected


def test_longer_term_says_what_is_charged_today_and_when_next() -> None:
    terms = terms_for(L, RULES, FACTS, NOW)
    # 20 of 30 days unused at $20: $13.33 credited against the $192 year.
    assert terms.credit == 1333 and terms.charged_today == 19200 - 1333
    assert terms.next_charge_at == datetime(2027, 11, 2, 9, 0, tzinfo=UTC)
    assert terms.savings_percent == 20  # $192 instead of 12 x $20
    assert terms.monthly_after == 1600 and terms.cadence_after == "year"
    no_proration = OfferRules((replace(RULES.get(L), proration_behavior="none"),))
    assert terms_for(L, no_proration, FACTS, NOW).charged_today == 19200


def test_downgrade_discount_and_pause_terms() -> None:
    down = terms_for(D, RULES, FACTS, NOW)
    assert (down.to_price, down.item_id, down.amount_after, down.monthly_after) == (
        "price_basic",
        "si_1",
        900,
        900,
    )
    assert down.next_charge_at == FACTS.current_period_end
    discount = terms_for(X, RULES, FACTS, NOW)
    assert (discount.coupon, discount.monthly_before, discount.monthly_after) == (
        "STAY25",
        2000,
        1500,
    )
    assert offer_ends_at(discount, NOW, None) == datetime(2027, 2, 2, 9, 0, tzinfo=UTC)
    pause = terms_for(P, RULES, FACTS, NOW)
    assert pause.pause_months == (1, 2, 3) and pause.monthly_after == 2000
    assert offer_ends_at(pause, NOW, 2) == datetime(2027, 1, 2, 9, 0, tzinfo=UTC)
    assert terms_for(P, RULES, FACTS, NOW) == type(pause).from_json(pause.to_json())
    assert terms_for(L, RULES, FACTS, NOW) == type(pause).from_json(
        terms_for(L, RULES, FACTS, NOW).to_json()
    )


@pytest.mark.parametrize(
    ("amount", "interval", "count", "monthly"),
    [
        (2000, "month", 1, 2000),
        (12000, "year", 1, 1000),
        (3000, "month", 3, 1000),
        (1000, "week", 1, 4333),
        (100, "day", 1, 3042),
        (5000, None, 1, 0),
    ],
)
def test_monthly_revenue(amount: int, interval: str | None, count: int, monthly: int) -> None:
    assert monthly_amount(amount, interval, count) == monthly


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        ((2027, 1, 31), 1, (2027, 2, 28)),
        ((2028, 1, 31), 1, (2028, 2, 29)),
        ((2026, 11, 30), 3, (2027, 2, 28)),
        ((2026, 12, 15), 12, (2027, 12, 15)),
        ((2026, 3, 31), -1, (2026, 2, 28)),
    ],
)
def test_add_months_clamps_to_the_month_end(
    start: tuple[int, int, int], months: int, expected: tuple[int, int, int]
) -> None:
    assert add_months(datetime(*start, tzinfo=UTC), months) == datetime(*expected, tzinfo=UTC)
