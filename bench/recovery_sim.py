"""Simulate failed subscription payments under three retry policies and compare them.

    .venv/bin/python bench/recovery_sim.py [--seed N] [--n 20000]
    .venv/bin/python bench/recovery_sim.py --routing [--seed N] [--days 182] [--per-day 100]
        [--replications 10] [--holdout 0.1] [--min-share 0.1]

With --routing: an experiment whose arms are retry policies, customers arriving day by day, and
the arms' shares fixed or routed by Thompson sampling; it prints the routing table and what the
exploration costs (section "routing simulation" below).

Each simulated payment has a hidden state drawn up front from its own seed: when the customer's
money arrives and how long it lasts, when a transient issuer problem clears, whether and when the
customer brings a new card or calls their bank. Whether a charge succeeds is a function of that
hidden state and the charge's time only, so every policy faces the same customers and no policy
can make a charge succeed by being the one that decided it (the success model never looks at the
policy). Every assumption is a named constant below with its source, or marked ASSUMPTION.
Sources: docs/stripe.md, docs/card-networks.md and docs/retry-evidence.md.
"""

from __future__ import annotations

import argparse
import calendar
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Literal, TypeVar
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from recovery.domain.bank_calls import answer_bank_call
from recovery.domain.declines import Decline
from recovery.domain.experiments import (
    HOLDOUT,
    Arm,
    DunningOptions,
    Experiment,
    Outcomes,
    Reassignment,
    RoutingMode,
    Shares,
    thompson_shares,
)
from recovery.domain.retry_policy import (
    Attempt,
    CardInfo,
    RetryContext,
    RetryRules,
    decide_next_retry,
)
from recovery.domain.stats import newcombe, verdict
from recovery.domain.timezones import customer_timezone

# ================================ knobs: population ===========================================
DEFAULT_N = 20_000
DEFAULT_SEED = 7
FIRST_FAILURE_FROM = datetime(2025, 6, 2, tzinfo=UTC)  # failures spread over one year from here
FAILURE_SPREAD_DAYS = 365  # so weekdays, month ends and DST changes all occur

# Share of failed payments by what went wrong. ASSUMPTION: vendor reports name insufficient funds
# the largest single reason; docs/retry-evidence.md gives no mix.
GROUP_MIX = {
    "insufficient_funds": 0.45,
    "soft": 0.25,
    "needs_new_card": 0.13,
    "needs_customer": 0.09,
    "never_retry": 0.08,
}
BRAND_MIX = {"visa": 0.55, "mastercard": 0.35, "amex": 0.07, "discover": 0.03}  # ASSUMPTION
FUNDING_MIX = {"debit": 0.45, "credit": 0.50, "prepaid": 0.05}  # ASSUMPTION

# Where customers live: (weight, country, [(zone, weight)], pay-cycle mix). ASSUMPTION, except
# the US pay-cycle shares, which roughly follow the BLS pay-period survey (not in docs/).
REGIONS = [
    (
        0.55,
        "US",
        [
            ("America/New_York", 0.47),
            ("America/Chicago", 0.29),
            ("America/Denver", 0.07),
            ("America/Los_Angeles", 0.17),
        ],
        {
            "biweekly_fri": 0.43,
            "weekly_fri": 0.27,
            "semimonthly_1_15": 0.20,
            "monthly_1": 0.05,
            "monthly_last_bd": 0.05,
        },
    ),
    (
        0.12,
        "GB",
        [("Europe/London", 1.0)],
        {"monthly_last_bd": 0.45, "monthly_25": 0.35, "weekly_fri": 0.20},
    ),
    (
        0.13,
        "DE",
        [("Europe/Berlin", 1.0)],
        {"monthly_last_bd": 0.70, "monthly_1": 0.15, "monthly_15": 0.15},
    ),
    (0.10, "FR", [("Europe/Paris", 1.0)], {"monthly_last_bd": 0.75, "monthly_25": 0.25}),
    # Brazil: salary by the 5th business day plus an advance on the 20th; neither is in our list.
    (0.05, "BR", [("America/Sao_Paulo", 1.0)], {"br_5th_bd_and_20": 1.0}),
    (
        0.05,
        "AU",
        [("Australia/Sydney", 0.75), ("Australia/Perth", 0.25)],
        {"biweekly_thu": 0.70, "monthly_last_bd": 0.30},
    ),
]
COUNTRY_KNOWN = 0.85  # address or card country on the Stripe customer. ASSUMPTION
LOCALE_KNOWN = 0.10  # only preferred_locales known; the rest know neither -> UTC. ASSUMPTION

# ================================ knobs: hidden behaviour ======================================
# insufficient_funds: a payday covers the invoice with this chance (per payday), the money then
# stays for FUNDS_LAST_DAYS (spent down after), and posts at a local hour in POST_HOURS. ASSUMPTION
COVER_CHANCE = {"debit": 0.80, "credit": 0.65, "prepaid": 0.35}
BROKE_SHARE = 0.25  # no payday in the window covers the invoice at all. ASSUMPTION
FUNDS_LAST_DAYS = (1.0, 6.0)  # uniform. ASSUMPTION
POST_HOURS = (0, 7)  # uniform, local. Debit cards may do better at 12:01 AM: docs/retry-evidence.md
SUCCESS_FUNDED = 0.95  # issuer approves when the money is there. ASSUMPTION
SUCCESS_UNFUNDED = 0.03  # other inflows, overdraft. ASSUMPTION
# Mastercard's Authorization Optimizer adds MAC 24-30 to recurring insufficient-funds declines
# (docs/card-networks.md, US from Oct 2023); the issuer picks the wait from when it expects money.
MASTERCARD_WAIT_ADVICE_SHARE = 0.30  # ASSUMPTION
# Soft declines: a transient issuer problem clears after an exponential time; some never clear
# (a "do_not_honor" that hides a closed account). ASSUMPTION
SOFT_CLEARS = 0.60
SOFT_CLEAR_MEAN_DAYS = 1.5
SUCCESS_SOFT_CLEARED = 0.85
SUCCESS_SOFT_PENDING = 0.04
SOFT_CODES = {
    "do_not_honor": 0.35,
    "generic_decline": 0.35,
    "processing_error": 0.10,
    "issuer_not_available": 0.10,
    "try_again_later": 0.10,
}
# Cards needing replacement: a new card arrives (customer, or Stripe's card updater keeping the
# card number for expired cards). Churn Buster: the card updater fixes most expiring cards
# (docs/retry-evidence.md#expiring-cards); the numbers are ASSUMPTION.
NEW_CARD_CODES = {
    "expired_card": 0.60,
    "incorrect_cvc": 0.15,
    "invalid_account": 0.10,
    "new_account_information_available": 0.10,
    "card_not_supported": 0.05,
}
CARD_CHANGE_CHANCE = {  # within 28 days, by group. ASSUMPTION
    "insufficient_funds": 0.05,
    "soft": 0.05,
    "needs_new_card": 0.50,
    "needs_customer": 0.15,
    "never_retry": 0.20,
}
CARD_CHANGE_MEAN_DAYS = 4.0  # exponential. ASSUMPTION
UPDATER_KEEPS_NUMBER = 0.50  # expired_card refreshed with the same number. ASSUMPTION
SUCCESS_NEW_CARD = 0.90  # ASSUMPTION
# Customer must act: off-session authentication never passes; a bank call fixes the others.
CUSTOMER_CODES = {
    "authentication_required": 0.45,
    "call_issuer": 0.20,
    "transaction_not_allowed": 0.20,
    "restricted_card": 0.15,
}
BANK_FIX_CHANCE = 0.30  # customer calls the bank and the same card works again. ASSUMPTION
BANK_FIX_MEAN_DAYS = 3.0
SUCCESS_BANK_FIXED = 0.90
# The bank signal: "I've contacted my bank - try again" on the card-update page, offered for a
# decline only the customer's bank can clear (not 3-D Secure, which happens on Stripe's page).
# ASSUMPTION, no published number: of the customers whose bank lifted the block, this share
# also tells us, uniformly 5 minutes to 6 hours after the fix (the rest leave it to our
# reminders or change card); of those whose bank did not lift it, this share presses anyway
# (they called and were told no, or never called), once, 12 hours to 5 days after the failure.
BANK_SIGNAL_AFTER_FIX = 0.50
BANK_SIGNAL_DELAY_HOURS = (5 / 60, 6.0)
BANK_SIGNAL_UNFIXED = 0.10
BANK_SIGNAL_UNFIXED_DAYS = (0.5, 5.0)
# Never-retry declines: the network says stop while Stripe's code is often generic (no Stripe
# field exposes the Visa category, docs/card-networks.md). The mixes are ASSUMPTION.
VISA_STOP_DECLINES = [  # (Visa category 1 response code, Stripe decline_code)
    ("46", "do_not_honor"),
    ("04", "pickup_card"),
    ("41", "lost_card"),
    ("43", "stolen_card"),
    ("R1", "revocation_of_authorization"),
    ("57", "transaction_not_allowed"),
]
MASTERCARD_STOP_DECLINES = [("03", "do_not_honor"), ("21", "generic_decline")]  # (MAC, code)
STRIPE_ADVICE_ON_MASTERCARD_STOP = 0.50  # share also carrying do_not_try_again. ASSUMPTION
OTHER_BRAND_STOP_CODES = ["fraudulent", "lost_card", "stolen_card"]
# Visa response codes sent with Stripe's soft codes (categories 4 and 2, docs/card-networks.md).
VISA_SOFT_RESPONSES = {"do_not_honor": "05", "issuer_not_available": "91", "processing_error": "96"}
# What the app sees of the customer's history: the renewal day was paid before, and this share
# once paid a late invoice just after a real payday (0-1 day later). ASSUMPTION
PAST_RECOVERY_SHARE = 0.30
# Customers with other invoices failing on the same card in the 30 days before. ASSUMPTION
OTHER_INVOICES_SHARE = 0.08
OTHER_INVOICE_ATTEMPTS = (8, 24)  # uniform count

# ================================ network rules (for counting violations) ======================
# Restated from docs/card-networks.md, not imported, so the policy is not graded by its own code.
VISA_CATEGORY_1 = {"04", "07", "12", "15", "41", "43", "46", "57", "R0", "R1", "R3"}
MASTERCARD_STOP_ADVICE = {"03", "21"}
VISA_STOP_ADVICE = {"02", "03", "21"}
MASTERCARD_WAIT = {
    "24": timedelta(hours=1),
    "25": timedelta(hours=24),
    "26": timedelta(days=2),
    "27": timedelta(days=4),
    "28": timedelta(days=6),
    "29": timedelta(days=8),
    "30": timedelta(days=10),
}
# Attempts on one card in 30 days, this one too (Visa 20, Mastercard 35; docs/card-networks.md).
NETWORK_CAP = {"visa": 20, "mastercard": 35}
CAP_PERIOD = timedelta(days=30)

# ================================ knobs: baselines =============================================
# Stripe's custom schedule allows at most 3 retries (docs/stripe.md): days 3, 5, 7 at the time of
# day of the first charge. Smart Retries' recommended "8 tries in 2 weeks", here evenly spaced.
BASELINES = {
    "stripe custom: day 3, 5, 7": [timedelta(days=d) for d in (3, 5, 7)],
    "8 retries evenly in 14 days": [timedelta(days=14 * k / 8) for k in range(1, 9)],
}
# Stripe won't retry these until a new payment method appears (docs/stripe.md#retries-by-stripe).
STRIPE_NO_AUTO_RETRY = {
    "incorrect_number",
    "lost_card",
    "pickup_card",
    "stolen_card",
    "revocation_of_authorization",
    "revocation_of_all_authorizations",
    "authentication_required",
    "highest_risk_level",
}
OURS = "recovery policy (ours)"
OURS_BANK = "ours + bank signal"
RULES = RetryRules()  # the defaults shipped in recovery/rules.default.toml

T = TypeVar("T")
Group = Literal["insufficient_funds", "soft", "needs_new_card", "needs_customer", "never_retry"]


@dataclass
class Case:
    """One failed payment and everything hidden about how it could still be paid."""

    seed: int
    t0: datetime
    group: Group
    brand: str
    funding: Literal["debit", "credit", "prepaid"]
    zone: ZoneInfo
    country: str | None
    locales: list[str]
    decline: Decline
    funded: list[tuple[datetime, datetime]] = field(default_factory=list)
    soft_clears_at: datetime | None = None
    bank_fixed_at: datetime | None = None
    bank_pressed_at: datetime | None = None  # "I've contacted my bank - try again"
    card_change_at: datetime | None = None
    change_keeps_number: bool = False
    prior: list[datetime] = field(default_factory=list)  # same card, other invoices
    past_success_days: list[int] = field(default_factory=list)


@dataclass
class Card:
    number: int  # 0 = the card that failed, 1 = a different card
    refreshed: bool  # card updater gave the same number new details


@dataclass
class Charge:
    at: datetime
    number: int
    ok: bool
    decline: Decline | None


@dataclass
class Outcome:
    charges: list[Charge]  # retries only; the first failed charge is not included
    recovered_at: datetime | None


# ================================ population ===================================================


def _pick(rng: random.Random, mix: dict[T, float]) -> T:
    return rng.choices(list(mix), weights=list(mix.values()))[0]


def _business_day_back(d: date) -> date:
    while d.weekday() >= 5:
        d -= timedelta(days=1)
    return d


def _nth_business_day(year: int, month: int, n: int) -> date:
    d, seen = date(year, month, 1), 0
    while True:
        if d.weekday() < 5:
            seen += 1
            if seen == n:
                return d
        d += timedelta(days=1)


def _last_business_day(year: int, month: int) -> date:
    return _business_day_back(date(year, month, calendar.monthrange(year, month)[1]))


def _paydays(cycle: str, start: date, end: date, phase: int) -> list[date]:
    """The customer's real paydays (local dates) between start and end."""
    days: set[date] = set()
    if cycle in {"weekly_fri", "biweekly_fri", "biweekly_thu"}:
        weekday = 3 if cycle.endswith("thu") else 4
        d = start + timedelta(days=(weekday - start.weekday()) % 7)
        while d <= end:
            if cycle == "weekly_fri" or (d.toordinal() // 7 + phase) % 2:
                days.add(d)
            d += timedelta(days=7)
        return sorted(days)
    y, m = start.year, start.month
    while date(y, m, 1) <= end:
        if cycle == "semimonthly_1_15":
            days |= {_business_day_back(date(y, m, 1)), _business_day_back(date(y, m, 15))}
        elif cycle in {"monthly_1", "monthly_15", "monthly_25"}:
            days.add(_business_day_back(date(y, m, int(cycle.split("_")[1]))))
        elif cycle == "monthly_last_bd":
            days.add(_last_business_day(y, m))
        elif cycle == "br_5th_bd_and_20":
            days |= {_nth_business_day(y, m, 5), _business_day_back(date(y, m, 20))}
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return sorted(x for x in days if start <= x <= end)


def _decline(rng: random.Random, group: Group, brand: str) -> Decline:
    visa, mc = brand == "visa", brand == "mastercard"
    if group == "insufficient_funds":
        return Decline(
            decline_code="insufficient_funds",
            network_decline_code="51" if visa or mc else None,
            card_brand=brand,
        )
    if group == "soft":
        code = _pick(rng, SOFT_CODES)
        ndc = VISA_SOFT_RESPONSES.get(code) if visa else None
        return Decline(decline_code=code, network_decline_code=ndc, card_brand=brand)
    if group == "needs_new_card":
        code = _pick(rng, NEW_CARD_CODES)
        mac = "01" if mc and code == "new_account_information_available" else None
        return Decline(decline_code=code, network_advice_code=mac, card_brand=brand)
    if group == "needs_customer":
        return Decline(decline_code=_pick(rng, CUSTOMER_CODES), card_brand=brand)
    # never_retry: Stripe's code is often generic; the network code says stop.
    if visa:
        ndc, code = rng.choice(VISA_STOP_DECLINES)
        return Decline(decline_code=code, network_decline_code=ndc, card_brand=brand)
    if mc:
        mac, code = rng.choice(MASTERCARD_STOP_DECLINES)
        advice = "do_not_try_again" if rng.random() < STRIPE_ADVICE_ON_MASTERCARD_STOP else None
        return Decline(
            decline_code=code, network_advice_code=mac, advice_code=advice, card_brand=brand
        )
    return Decline(decline_code=rng.choice(OTHER_BRAND_STOP_CODES), card_brand=brand)


def make_case(seed: int, index: int) -> Case:
    rng = random.Random(seed * 1_000_003 + index)
    t0 = FIRST_FAILURE_FROM + timedelta(minutes=rng.randrange(FAILURE_SPREAD_DAYS * 24 * 60))
    _, country, zones, cycles = rng.choices(REGIONS, weights=[r[0] for r in REGIONS])[0]
    zone = ZoneInfo(_pick(rng, dict(zones)))
    known = rng.random()
    locales = [f"en-{country}"] if COUNTRY_KNOWN <= known < COUNTRY_KNOWN + LOCALE_KNOWN else []
    group: Group = _pick(rng, GROUP_MIX)  # type: ignore[arg-type]
    brand = _pick(rng, BRAND_MIX)
    funding = _pick(rng, FUNDING_MIX)
    case = Case(
        seed=seed * 1_000_003 + index,
        t0=t0,
        group=group,
        brand=brand,
        funding=funding,  # type: ignore[arg-type]
        zone=zone,
        country=country if known < COUNTRY_KNOWN else None,
        locales=locales,
        decline=_decline(rng, group, brand),
    )
    # Paydays and funded stretches (drawn for every case, used by insufficient_funds).
    local0 = t0.astimezone(zone).date()
    cycle = _pick(rng, cycles)
    phase = rng.randrange(2)
    broke = rng.random() < BROKE_SHARE
    lasts = timedelta(days=rng.uniform(*FUNDS_LAST_DAYS))
    post_hour = rng.randint(*POST_HOURS)
    days = _paydays(cycle, local0 - timedelta(days=40), local0 + timedelta(days=40), phase)
    for day in days:
        posts = datetime(day.year, day.month, day.day, post_hour, tzinfo=zone).astimezone(UTC)
        covers = not broke and rng.random() < COVER_CHANCE[funding]
        if covers and not posts <= t0 < posts + lasts:  # the first charge did fail
            case.funded.append((posts, posts + lasts))
    advised = rng.random() < MASTERCARD_WAIT_ADVICE_SHARE
    if group == "insufficient_funds" and brand == "mastercard" and advised:
        # The issuer knows when money is due: the shortest advised wait that reaches it.
        due = next((s for s, _ in case.funded if s > t0), t0 + timedelta(days=10))
        mac = next((m for m, w in MASTERCARD_WAIT.items() if t0 + w >= due), "30")
        case.decline = Decline(
            decline_code="insufficient_funds",
            network_decline_code="51",
            network_advice_code=mac,
            card_brand=brand,
        )
    if rng.random() < SOFT_CLEARS:
        case.soft_clears_at = t0 + timedelta(days=rng.expovariate(1 / SOFT_CLEAR_MEAN_DAYS))
    if rng.random() < BANK_FIX_CHANCE:
        case.bank_fixed_at = t0 + timedelta(days=rng.expovariate(1 / BANK_FIX_MEAN_DAYS))
    if rng.random() < CARD_CHANGE_CHANCE[group]:
        case.card_change_at = t0 + timedelta(days=rng.expovariate(1 / CARD_CHANGE_MEAN_DAYS))
        case.change_keeps_number = (
            case.decline.decline_code == "expired_card" and rng.random() < UPDATER_KEEPS_NUMBER
        )
    if rng.random() < OTHER_INVOICES_SHARE:
        count = rng.randint(*OTHER_INVOICE_ATTEMPTS)
        case.prior = sorted(
            t0 - timedelta(minutes=rng.randrange(1, 30 * 24 * 60)) for _ in range(count)
        )
    case.past_success_days = [local0.day]
    if rng.random() < PAST_RECOVERY_SHARE and days:
        case.past_success_days.append(min(rng.choice(days).day + rng.randint(0, 1), 31))
    _bank_signal(case)
    return case


def _bank_signal(case: Case) -> None:
    """When the customer presses the bank button, if ever. Its own random stream, so the rest of
    the population (and every figure without the signal) is what it was before."""
    if case.group != "needs_customer" or case.decline.decline_code == "authentication_required":
        return
    rng = random.Random(case.seed * 7 + 3)
    if case.bank_fixed_at is not None:
        if rng.random() < BANK_SIGNAL_AFTER_FIX:
            hours = rng.uniform(*BANK_SIGNAL_DELAY_HOURS)
            case.bank_pressed_at = case.bank_fixed_at + timedelta(hours=hours)
    elif rng.random() < BANK_SIGNAL_UNFIXED:
        case.bank_pressed_at = case.t0 + timedelta(days=rng.uniform(*BANK_SIGNAL_UNFIXED_DAYS))


# ================================ the world's answer to a charge ===============================


def _noise(case: Case, number: int, at: datetime) -> float:
    """A fixed random draw per (case, card, minute): the same charge gets the same answer.

    splitmix64 over the three numbers: fast, and independent of which policy asks.
    """
    mask = (1 << 64) - 1
    x = (case.seed * 0x9E3779B1 + number * 0x85EBCA77 + int(at.timestamp() // 60)) & mask
    x = (x + 0x9E3779B97F4A7C15) & mask
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    return (x ^ (x >> 31)) / 2.0**64


def charge(case: Case, card: Card, at: datetime) -> tuple[bool, Decline | None]:
    if card.number == 1:
        ok = _noise(case, 1, at) < SUCCESS_NEW_CARD
        return ok, None if ok else Decline(decline_code="generic_decline", card_brand=case.brand)
    chance = 0.0
    if case.group == "insufficient_funds":
        wait = MASTERCARD_WAIT.get(case.decline.network_advice_code or "")
        funded = any(s <= at < e for s, e in case.funded)
        chance = SUCCESS_FUNDED if funded else SUCCESS_UNFUNDED
        if wait is not None and at < case.t0 + wait:
            chance = 0.0  # the issuer holds to its own advice. ASSUMPTION
    elif case.group == "soft":
        cleared = case.soft_clears_at is not None and at >= case.soft_clears_at
        chance = SUCCESS_SOFT_CLEARED if cleared else SUCCESS_SOFT_PENDING
    elif case.group == "needs_new_card":
        chance = SUCCESS_NEW_CARD if card.refreshed else 0.0
    elif case.group == "needs_customer":
        bank_ok = case.bank_fixed_at is not None and at >= case.bank_fixed_at
        if case.decline.decline_code != "authentication_required" and bank_ok:
            chance = SUCCESS_BANK_FIXED
    ok = _noise(case, 0, at) < chance
    return ok, None if ok else case.decline


def _card_after_change(case: Case) -> Card:
    return Card(0, True) if case.change_keeps_number else Card(1, False)


# ================================ policies =====================================================


def run_baseline(case: Case, offsets: Sequence[timedelta]) -> Outcome:
    charges: list[Charge] = []
    last_decline: Decline | None = case.decline
    card = Card(0, False)
    changed = False
    for offset in offsets:
        at = case.t0 + offset
        if case.card_change_at is not None and case.card_change_at <= at and not changed:
            card, changed = _card_after_change(case), True
            last_decline = None
        code = last_decline.decline_code if last_decline else None
        if code in STRIPE_NO_AUTO_RETRY:
            continue  # Stripe waits for a new payment method
        ok, last_decline = charge(case, card, at)
        charges.append(Charge(at, card.number, ok, last_decline))
        if ok:
            return Outcome(charges, at)
    return Outcome(charges, None)


def run_ours(case: Case, rules: RetryRules = RULES, *, bank_signal: bool = False) -> Outcome:
    zone = customer_timezone(case.country, case.locales)
    window_end = case.t0 + timedelta(days=rules.window_days)
    card = Card(0, False)
    info = CardInfo(case.brand, case.funding, "card-0")
    history = [
        Attempt(t, "card-0", case.brand, case.decline, False, "stripe", False) for t in case.prior
    ]
    history.append(Attempt(case.t0, "card-0", case.brand, case.decline, False, "stripe"))
    charges: list[Charge] = []
    changed = False
    change_at = case.card_change_at
    press_at = case.bank_pressed_at if bank_signal else None
    bank_calls: list[datetime] = []
    now = case.t0
    while now < window_end:
        ctx = RetryContext(
            case_opened_at=case.t0,
            attempts=history,
            card=info,
            card_changed_since_last_failure=changed,
            customer_timezone=zone,
            amount=2_000,
            currency="usd",
            past_success_days=case.past_success_days,
            bank_calls=tuple(bank_calls),
        )
        decision = decide_next_retry(ctx, rules, now)
        # The app's answer to the bank button, when it is pressed before the planned charge.
        if (
            press_at is not None
            and press_at < window_end
            and (decision.at is None or press_at <= decision.at)
        ):
            now, press_at = max(now, press_at), None
            if answer_bank_call(ctx, rules, now, len(bank_calls)).refusal is None:
                bank_calls.append(now)
            continue
        # The app re-decides when a card-change webhook arrives before the planned charge.
        changes = change_at is not None and change_at < window_end
        if changes and change_at is not None and (decision.at is None or change_at <= decision.at):
            now, change_at = max(now, change_at), None
            card, changed = _card_after_change(case), True
            info = CardInfo(case.brand, case.funding, f"card-{card.number}")
            continue
        if decision.at is None:
            break
        now = decision.at
        ok, decline = charge(case, card, now)
        charges.append(Charge(now, card.number, ok, decline))
        if ok:
            return Outcome(charges, now)
        history.append(Attempt(now, f"card-{card.number}", case.brand, decline, False, "recovery"))
        changed = False
    return Outcome(charges, None)


# ================================ grading ======================================================


def violations(case: Case, outcome: Outcome) -> tuple[int, int, int]:
    """(after a network stop, before a network wait, over a network cap) on the first card."""
    d = case.decline
    stop = (case.brand == "visa" and d.network_decline_code in VISA_CATEGORY_1) or (
        d.network_advice_code
        in (MASTERCARD_STOP_ADVICE if case.brand == "mastercard" else VISA_STOP_ADVICE)
        and case.brand in {"visa", "mastercard"}
    )
    wait = MASTERCARD_WAIT.get(d.network_advice_code or "") if case.brand == "mastercard" else None
    cap = NETWORK_CAP.get(case.brand)
    after_stop = early = over_cap = 0
    failures = [case.t0]  # failed charges on the first card, each carries the same advice
    on_card = [*case.prior, case.t0]
    for c in outcome.charges:
        if c.number != 0:
            continue
        after_stop += stop
        early += wait is not None and c.at < failures[-1] + wait
        on_card.append(c.at)
        over_cap += cap is not None and sum(c.at - CAP_PERIOD < t <= c.at for t in on_card) > cap
        if not c.ok:
            failures.append(c.at)
    return after_stop, early, over_cap


@dataclass
class Tally:
    recovered: int = 0
    retries: int = 0
    failed: int = 0
    after_stop: int = 0
    early: int = 0
    over_cap: int = 0
    days: list[float] = field(default_factory=list)
    by_group: dict[str, list[int]] = field(default_factory=dict)  # group -> [recovered, total]

    def add(self, case: Case, outcome: Outcome) -> None:
        self.retries += len(outcome.charges)
        self.failed += sum(not c.ok for c in outcome.charges)
        stop, early, cap = violations(case, outcome)
        self.after_stop += stop
        self.early += early
        self.over_cap += cap
        counts = self.by_group.setdefault(case.group, [0, 0])
        counts[1] += 1
        if outcome.recovered_at is not None:
            self.recovered += 1
            counts[0] += 1
            self.days.append((outcome.recovered_at - case.t0) / timedelta(days=1))


def simulate(seed: int, n: int) -> dict[str, Tally]:
    policies: dict[str, Callable[[Case], Outcome]] = {
        name: partial(run_baseline, offsets=offsets) for name, offsets in BASELINES.items()
    }
    policies[OURS] = run_ours
    policies[OURS_BANK] = partial(run_ours, bank_signal=True)
    tallies = {name: Tally() for name in policies}
    for index in range(n):
        case = make_case(seed, index)
        for name, policy in policies.items():
            tallies[name].add(case, policy(case))
    return tallies


def report(tallies: dict[str, Tally], n: int) -> str:
    columns = [
        ("recovered", 10),
        ("retries", 9),
        ("retries/rec", 12),
        ("failed", 8),
        ("failed/rec", 11),
        ("violations", 11),
        ("(stop/early/cap)", 19),
        ("median days", 12),
    ]
    head = f"{'policy':<30}" + "".join(f"{name:>{width}}" for name, width in columns)
    lines = [head, "-" * len(head)]
    for name, t in tallies.items():
        per = t.retries / t.recovered if t.recovered else float("nan")
        failed_per = t.failed / t.recovered if t.recovered else float("nan")
        median = statistics.median(t.days) if t.days else float("nan")
        total = t.after_stop + t.early + t.over_cap
        split = f"({t.after_stop}/{t.early}/{t.over_cap})"
        lines.append(
            f"{name:<30}{t.recovered / n:>10.1%}{t.retries:>9}{per:>12.2f}{t.failed:>8}"
            f"{failed_per:>11.2f}{total:>11}{split:>19}{median:>12.1f}"
        )
    lines += ["", "recovered, by decline group:"]
    groups = list(GROUP_MIX)
    lines.append(f"{'policy':<30}" + "".join(f"{g:>20}" for g in groups))
    for name, t in tallies.items():
        cells = []
        for g in groups:
            won, total = t.by_group.get(g, [0, 0])
            cells.append(f"{won / total if total else 0:>20.1%}")
        lines.append(f"{name:<30}" + "".join(cells))
    return "\n".join(lines)


# ================================ routing simulation (--routing) ===============================
# Issue 11, item 4: a dunning experiment whose arms are retry policies, customers arriving day by
# day, and the arms' shares either fixed or routed by Thompson sampling - the service's own
# assignment and routing code (recovery.domain.experiments). Every customer's outcome under every
# arm and under the holdout is computed from the world model above, so each routing faces the
# same customers and "always the best arm" is known exactly.
ROUTING_DAYS = 182  # 26 weeks of arrivals
ROUTING_PER_DAY = 100  # failed payments a day. ASSUMPTION: a business with ~3,000 a month
# Routings of the same customers, each with its own experiment key (so its own split) and RNG.
ROUTING_REPLICATIONS = 10
ROUTING_HOLDOUT = 0.10  # as in the example
ROUTING_MIN_SHARE = 0.10
ROUTING_TABLE_EVERY = 14  # days between rows of the routing table
# What Stripe alone does for the holdout: Smart Retries, for which "8 retries evenly in 14 days"
# stands in (BASELINES above). ASSUMPTION, as there.
ROUTING_HOLDOUT_POLICY = "8 retries evenly in 14 days"
# The arms: retry policies the rules can express ("ours", our policy with a rule switched off, a
# fixed schedule). ASSUMPTION: the world model has no messages, so card changes and bank calls
# happen alike in every arm; arms that differ only in reminders would show no difference here.
ROUTING_ARMS: dict[str, Callable[[Case], Outcome]] = {
    "ours": run_ours,
    "ours_no_payday": partial(run_ours, rules=replace(RULES, payday_targeting=False)),
    "day_3_5_7": partial(run_baseline, offsets=BASELINES["stripe custom: day 3, 5, 7"]),
}
# Each day's reassignment (the worker's daily job) uses every customer whose outcome is final:
# those who arrived at least the retry window ago (see recovery.domain.experiments.Outcomes).
# A customer's place in the world (t0, paydays) is drawn by make_case as above; only the order of
# arrival is the simulation's. ASSUMPTION: the arms' true rates do not drift over the 26 weeks.


def routing_population(seed: int, n: int) -> list[dict[str, bool]]:
    """For each customer, recovered or not under each arm and under the holdout."""
    policies: dict[str, Callable[[Case], Outcome]] = {
        HOLDOUT: partial(run_baseline, offsets=BASELINES[ROUTING_HOLDOUT_POLICY]),
        **ROUTING_ARMS,
    }
    population = []
    for index in range(n):
        case = make_case(seed, index)
        population.append(
            {name: run(case).recovered_at is not None for name, run in policies.items()}
        )
    return population


def routing_experiment(
    key: str, routing: RoutingMode, holdout: float, min_share: float
) -> Experiment:
    return Experiment(
        key=key,
        applies_to="dunning",
        arms=tuple(Arm(name, 1.0, DunningOptions()) for name in ROUTING_ARMS),
        holdout=holdout,
        routing=routing,
        min_share=min_share if routing == "thompson" else 0.0,
    )


@dataclass
class RoutingRun:
    arms: list[str] = field(default_factory=list)  # per customer, in order of arrival
    shares: list[Shares] = field(default_factory=list)  # per day: what that day's customers met
    reassignments: dict[int, Reassignment] = field(default_factory=dict)  # by day
    finished: dict[str, list[int]] = field(default_factory=dict)  # arm -> [recovered, not]

    def recovered(self, population: list[dict[str, bool]], *, holdout: bool = False) -> int:
        return sum(
            outcome[arm]
            for arm, outcome in zip(self.arms, population, strict=False)
            if (arm == HOLDOUT) == holdout
        )


def route(
    population: list[dict[str, bool]],
    experiment: Experiment,
    rng: random.Random,
    days: int,
    per_day: int,
) -> RoutingRun:
    window = RULES.window_days
    run = RoutingRun(finished={name: [0, 0] for name in (HOLDOUT, *ROUTING_ARMS)})
    shares = experiment.fixed_shares()
    for day in range(days):
        if day >= window:  # the customers who arrived `window` days ago are final today
            for i in range((day - window) * per_day, (day - window + 1) * per_day):
                run.finished[run.arms[i]][0 if population[i][run.arms[i]] else 1] += 1
            if experiment.routing == "thompson":
                counts = {name: Outcomes(*run.finished[name]) for name in ROUTING_ARMS}
                reassignment = thompson_shares(experiment, counts)
                run.reassignments[day] = reassignment
                shares = reassignment.shares
        run.shares.append(shares)
        for i in range(day * per_day, (day + 1) * per_day):
            run.arms.append(experiment.assign(f"cus_{i:06d}", shares))
    return run


def _spread(values: Sequence[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):+.0f} ± {sd:.0f}"


@dataclass(frozen=True)
class RoutingSetup:
    seed: int
    days: int
    per_day: int
    replications: int
    holdout: float
    min_share: float


def routing_table(run: RoutingRun, days: int) -> list[str]:
    """Replication 1's shares by day, with the posteriors that set them."""
    arms = list(ROUTING_ARMS)
    top = f"{'':>4}{'':>7}{'':>9}" + "".join(f"{name:>24}" for name in arms)
    head = f"{'day':>4}{'final':>7}{HOLDOUT:>9}" + f"{'share':>8}{'mean':>8}{'P(best)':>8}" * 3
    lines = [top, head, "-" * len(head)]
    for day in [*range(0, days, ROUTING_TABLE_EVERY), days - 1]:
        shares = run.shares[day]
        reassignment = run.reassignments.get(day)
        posteriors = {p.arm: p for p in reassignment.posteriors} if reassignment else {}
        final = sum(p.recovered + p.not_recovered for p in posteriors.values())
        cells = ""
        for name in arms:
            p = posteriors.get(name)
            mean, best = (f"{p.mean:.1%}", f"{p.p_best:.0%}") if p else ("-", "-")
            cells += f"{shares[name]:>8.1%}{mean:>8}{best:>8}"
        lines.append(f"{day:>4}{final:>7}{shares.holdout:>9.1%}{cells}")
    return lines


def routing_report(setup: RoutingSetup) -> str:
    days, per_day, n = setup.days, setup.per_day, setup.days * setup.per_day
    window = RULES.window_days
    population = routing_population(setup.seed, n)
    rates = {name: sum(c[name] for c in population) / n for name in (HOLDOUT, *ROUTING_ARMS)}
    best = max(ROUTING_ARMS, key=rates.__getitem__)
    runs: dict[RoutingMode, list[RoutingRun]] = {"thompson": [], "fixed": []}
    for r in range(setup.replications):
        for mode in runs:
            experiment = routing_experiment(
                f"dunning-sim-{r}", mode, setup.holdout, setup.min_share
            )
            rng = random.Random(setup.seed * 1_000 + r)
            runs[mode].append(route(population, experiment, rng, days, per_day))
    lines = [
        f"Routing: {n} failed payments over {days} days ({per_day} a day), seed {setup.seed}.",
        f"Holdout {setup.holdout:.0%}: Stripe alone ({ROUTING_HOLDOUT_POLICY}). Thompson keeps"
        f" min_share {setup.min_share:.0%} per arm;",
        f"shares are recomputed daily from the customers whose {window}-day window is over.",
        "True recovery rate of these customers under each: "
        + ", ".join(f"{name} {rate:.1%}" for name, rate in rates.items())
        + ".",
        "",
        "Thompson routing table (replication 1): each arm's share of new customers that day, and",
        "the posterior mean recovery rate and P(best) that set it, from the `final` customers.",
        *routing_table(runs["thompson"][0], days),
    ]

    # What exploring costs: against always the best arm, and against fixed equal shares.
    def recovered(
        run: RoutingRun, arm_of: Callable[[str], str], arrivals: int | None = None
    ) -> int:
        """Recoveries among the first `arrivals` customers not held out, each in arm_of(arm)."""
        return sum(
            population[i][arm_of(arm)]
            for i, arm in enumerate(run.arms[:arrivals])
            if arm != HOLDOUT
        )

    def as_routed(arm: str) -> str:
        return arm

    def always_best(arm: str) -> str:
        return best

    oracle = [recovered(run, always_best) for run in runs["thompson"]]
    routed = {m: [recovered(run, as_routed) for run in mode_runs] for m, mode_runs in runs.items()}
    early = window * per_day  # customers who arrived before any outcome was final
    early_loss = [
        recovered(run, as_routed, early) - recovered(run, always_best, early)
        for run in runs["thompson"]
    ]
    customers = statistics.fmean(sum(a != HOLDOUT for a in run.arms) for run in runs["thompson"])
    lines += [
        "",
        f"What routing costs: recoveries among the ~{customers:.0f} customers not held out, mean ±"
        f" sd over {setup.replications} routings",
        "of the same customers (each its own experiment key, so its own split, and its own seed):",
        f"{'routing':<24}{'recovered':>11}{'vs always ' + best:>22}{'vs fixed equal':>18}",
    ]
    rows = {
        f"always {best}": oracle,
        "thompson": routed["thompson"],
        "fixed equal": routed["fixed"],
    }
    for name, values in rows.items():
        lost = [v - o for v, o in zip(values, oracle, strict=True)]
        gained = [v - f for v, f in zip(values, routed["fixed"], strict=True)]
        lines.append(
            f"{name:<24}{statistics.fmean(values):>11.0f}{_spread(lost):>22}{_spread(gained):>18}"
        )
    cost = statistics.fmean(t - o for t, o in zip(routed["thompson"], oracle, strict=True))
    lines.append(
        f"Of thompson's {cost:+.0f}, {statistics.fmean(early_loss):+.0f} fall in the first"
        f" {window} days (no outcome final yet, so equal"
    )
    lines.append("shares); the rest is the min_share floors and telling close arms apart.")
    held = [
        sum(
            population[i][best] - population[i][HOLDOUT]
            for i, arm in enumerate(run.arms)
            if arm == HOLDOUT
        )
        for run in runs["thompson"]
    ]
    lines.append(
        f"The holdout's customers would have had {statistics.fmean(held):+.0f} recoveries"
        f" under {best}: the price of measuring the lift."
    )

    # What the results view would say at the end of replication 1.
    lines += [
        "",
        f"Lift over the holdout on day {days} (replication 1, final customers, Newcombe 95 %):",
    ]
    for mode, mode_runs in runs.items():
        finished = mode_runs[0].finished
        won, failed = finished[HOLDOUT]
        lines.append(f"  {mode}: holdout {won / (won + failed):.1%} of {won + failed}")
        for name in ROUTING_ARMS:
            k, f = finished[name]
            interval = newcombe(k, k + f, won, won + failed)
            lines.append(
                f"    {name:<16}{k / (k + f):>6.1%} of {k + f:<6} lift"
                f" {k / (k + f) - won / (won + failed):+.1%} [{interval.low:+.1%},"
                f" {interval.high:+.1%}]: {verdict(interval)}"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--n", type=int, default=DEFAULT_N)
    parser.add_argument("--routing", action="store_true", help="the routing simulation instead")
    parser.add_argument("--days", type=int, default=ROUTING_DAYS)
    parser.add_argument("--per-day", type=int, default=ROUTING_PER_DAY)
    parser.add_argument("--replications", type=int, default=ROUTING_REPLICATIONS)
    parser.add_argument("--holdout", type=float, default=ROUTING_HOLDOUT)
    parser.add_argument("--min-share", type=float, default=ROUTING_MIN_SHARE)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.routing:
        setup = RoutingSetup(
            args.seed, args.days, args.per_day, args.replications, args.holdout, args.min_share
        )
        print(routing_report(setup))
        print(f"Took {time.perf_counter() - started:.1f}s.")
        return
    tallies = simulate(args.seed, args.n)
    print(f"{args.n} failed payments, seed {args.seed}; ours uses RetryRules() defaults")
    print(report(tallies, args.n))
    print(
        "\nretries: charges after the first failed one; failed: retries that were declined"
        "\n(the wasted ones); /rec: per recovered payment. Violations: charges of the same card"
        "\nafter a stop (Visa category 1, Mastercard advice 03/21, Visa advice 02/03/21), before"
        "\na Mastercard 24-30 wait, or beyond 20 (Visa) / 35 (Mastercard) charges of one card in"
        "\n30 days counting other invoices. Baselines end after their last retry; ours runs"
        f"\n{RULES.window_days} days. '{OURS_BANK}': ours, and a customer whose bank lifted the"
        f'\nblock presses "I\'ve contacted my bank - try again" in {BANK_SIGNAL_AFTER_FIX:.0%} of'
        f"\ncases, 5 min to 6 h after the fix; {BANK_SIGNAL_UNFIXED:.0%} of the others press it"
        "\nanyway (ASSUMPTIONS; the try follows within the hour, at most twice a case)."
        f"\nTook {time.perf_counter() - started:.1f}s."
    )


if __name__ == "__main__":
    main()
