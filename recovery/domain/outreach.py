"""Outreach beyond the failed payment: annual-term offers, win-back notes and account contacts.
Pure: the rules' `[term_offers]` and `[win_back]` tables, who qualifies when, and contacts.

Annual-term offers: monthly subscribers in months `months_from`..`months_to` of their
subscription (month 1 is the first month) are offered the yearly price the rules pair with
their monthly one. `proration = "charge_now"` switches at once and charges the year less the
unused part of the month; `"next_renewal"` keeps the month paid and starts the year at the
renewal (a Stripe subscription schedule) - docs/stripe.md#plan-changes-and-discounts.

Win-back: marketing notes `days` after a subscription ended, only where the customer's metadata
records the business's consent (`consent_metadata_key`), never after an unsubscribe
(docs/messaging.md#transactional-and-commercial-email, #one-click-unsubscribe).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from recovery.domain.offers import add_months
from recovery.domain.sms import consent_recorded

PRORATIONS = ("charge_now", "next_renewal")
ROLES = ("billing", "owner", "admin")
BILLING_EMAIL_KEY = "recovery_billing_email"
OWNER_EMAILS_KEY = "recovery_owner_emails"
# RFC 5321 allows more, but a contact address is typed by a person or a CRM: be plain and strict.
EMAIL_SHAPE = re.compile(r"[^@\s,;<>\"']{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
MAX_EMAIL = 254


class OutreachRulesError(ValueError):
    """The rules' [term_offers] or [win_back] table is invalid; the message names the key."""


@dataclass(frozen=True)
class PricePair:
    monthly: str  # `from`: a monthly Stripe price
    annual: str  # `to`: the yearly price offered instead


@dataclass(frozen=True)
class TermOfferRules:
    enabled: bool = False
    months_from: int = 1
    months_to: int = 4
    prices: tuple[PricePair, ...] = ()
    proration: str = "charge_now"

    def annual_for(self, monthly_price: str | None) -> str | None:
        return next((p.annual for p in self.prices if p.monthly == monthly_price), None)


@dataclass(frozen=True)
class WinBackRules:
    enabled: bool = False
    days: tuple[int, ...] = (14, 60)
    consent_metadata_key: str = "marketing_consent"
    coupon: str = ""


def _int(data: Mapping[str, Any], key: str, where: str, low: int, high: int, default: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise OutreachRulesError(f"{where}.{key} must be a whole number from {low} to {high}")
    return value


def _bool(data: Mapping[str, Any], key: str, where: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise OutreachRulesError(f"{where}.{key} must be true or false")
    return value


def _str(data: Mapping[str, Any], key: str, where: str, default: str) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise OutreachRulesError(f"{where}.{key} must be a string")
    return value.strip()


def parse_term_offers(data: Mapping[str, Any]) -> TermOfferRules:
    where = "term_offers"
    unknown = set(data) - {"enabled", "months_from", "months_to", "prices", "proration"}
    if unknown:
        raise OutreachRulesError(f"unknown key in rules file: {where}.{sorted(unknown)[0]}")
    months_from = _int(data, "months_from", where, 1, 24, 1)
    months_to = _int(data, "months_to", where, 1, 24, 4)
    if months_to < months_from:
        raise OutreachRulesError(f"{where}.months_to must not be before months_from")
    proration = data.get("proration", "charge_now")
    if proration not in PRORATIONS:
        raise OutreachRulesError(f"{where}.proration must be one of {', '.join(PRORATIONS)}")
    raw = data.get("prices", [])
    if not isinstance(raw, list):
        raise OutreachRulesError(f"{where}.prices must be a list of {{ from, to }} tables")
    pairs = []
    for i, entry in enumerate(raw):
        at = f"{where}.prices[{i}]"
        if not isinstance(entry, Mapping) or set(entry) != {"from", "to"}:
            raise OutreachRulesError(f'{at} must be {{ from = "price_...", to = "price_..." }}')
        monthly, annual = entry["from"], entry["to"]
        if not (isinstance(monthly, str) and monthly and isinstance(annual, str) and annual):
            raise OutreachRulesError(f"{at}.from and .to must be Stripe price ids")
        if monthly == annual:
            raise OutreachRulesError(f"{at}.to must differ from .from")
        pairs.append(PricePair(monthly, annual))
    if len({p.monthly for p in pairs}) != len(pairs):
        raise OutreachRulesError(f"{where}.prices names a monthly price twice")
    return TermOfferRules(
        enabled=_bool(data, "enabled", where),
        months_from=months_from,
        months_to=months_to,
        prices=tuple(pairs),
        proration=str(proration),
    )


def parse_win_back(data: Mapping[str, Any]) -> WinBackRules:
    where = "win_back"
    unknown = set(data) - {"enabled", "days", "consent_metadata_key", "coupon"}
    if unknown:
        raise OutreachRulesError(f"unknown key in rules file: {where}.{sorted(unknown)[0]}")
    days = data.get("days", [14, 60])
    if (
        not isinstance(days, list)
        or not days
        or len(days) > 6
        or any(isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= 365 for d in days)
        or sorted(set(days)) != days
    ):
        raise OutreachRulesError(
            f"{where}.days must be 1 to 6 increasing whole numbers of days from 1 to 365"
        )
    key = _str(data, "consent_metadata_key", where, "marketing_consent")
    if not key:
        raise OutreachRulesError(f"{where}.consent_metadata_key must name a metadata key")
    return WinBackRules(
        enabled=_bool(data, "enabled", where),
        days=tuple(days),
        consent_metadata_key=key,
        coupon=_str(data, "coupon", where, ""),
    )


# ---- annual-term offers -------------------------------------------------------------------------


def subscription_month(started: datetime, now: datetime) -> int:
    """Which month of its life a subscription is in: 1 during the first month."""
    months = (now.year - started.year) * 12 + now.month - started.month
    if add_months(started, months) > now:
        months -= 1
    return max(months, 0) + 1


def in_offer_window(started: datetime, now: datetime, rules: TermOfferRules) -> bool:
    return rules.months_from <= subscription_month(started, now) <= rules.months_to


@dataclass(frozen=True)
class PriceTerms:
    amount: int  # minor units per billing period, per unit
    currency: str
    interval: str | None
    interval_count: int
    active: bool


def price_terms(price: Mapping[str, Any]) -> PriceTerms:
    """A Stripe price's amount and period; a legacy plan (which Stripe accepts wherever a price
    goes) carries them at the top level as `amount`, `interval`, `interval_count`."""
    recurring = price.get("recurring") or {}
    amount = price.get("unit_amount")
    if amount is None:
        amount = price.get("amount")
    return PriceTerms(
        amount=int(amount or 0),
        currency=str(price.get("currency") or "").lower(),
        interval=recurring.get("interval") or price.get("interval"),
        interval_count=int(recurring.get("interval_count") or price.get("interval_count") or 1),
        active=bool(price.get("active", True)),
    )


def yearly_saving(monthly_amount: int, annual_amount: int, quantity: int = 1) -> int:
    """What a year costs less on the annual price than twelve months (minor units)."""
    return (12 * monthly_amount - annual_amount) * quantity


# ---- win-back -----------------------------------------------------------------------------------


def win_back_times(ended_at: datetime, days: Sequence[int]) -> list[datetime]:
    return [ended_at + timedelta(days=d) for d in days]


def marketing_consent(metadata: Mapping[str, object] | None, rules: WinBackRules) -> bool:
    """The business recorded consent to marketing mail under the rules' key ("true", "yes",
    "1" or a date, as for SMS)."""
    return consent_recorded(metadata, rules.consent_metadata_key)


# ---- contacts -----------------------------------------------------------------------------------


def clean_email(value: object) -> str | None:
    """A contact address, lower-cased, or None when it is not one."""
    if not isinstance(value, str):
        return None
    email = value.strip().lower()
    if len(email) > MAX_EMAIL or not EMAIL_SHAPE.fullmatch(email):
        return None
    return email


def metadata_contacts(metadata: Mapping[str, object] | None) -> list[tuple[str, str]]:
    """(role, email) from the customer's metadata: `recovery_billing_email` (one address) and
    `recovery_owner_emails` (comma-separated). Addresses that are not addresses are skipped."""
    data = metadata or {}
    found: list[tuple[str, str]] = []
    billing = clean_email(data.get(BILLING_EMAIL_KEY))
    if billing:
        found.append(("billing", billing))
    raw = data.get(OWNER_EMAILS_KEY)
    for part in str(raw).split(",") if isinstance(raw, str) else []:
        owner = clean_email(part)
        if owner and ("owner", owner) not in found:
            found.append(("owner", owner))
    return found
