"""A customer's business days: not a weekend, not a public holiday of their country.

Banks post salaries and transfers on business days only (a payday that falls on a weekend or
holiday is paid on the business day before), and a reminder read on Christmas morning is a
reminder ignored. Holidays come from the `holidays` package (national holidays per ISO 3166
country, with the country's own weekend: Friday-Saturday in Saudi Arabia, for instance); a
country it does not know, or none, has Saturday-Sunday weekends and no holidays.

Pure: the package computes holidays from rules, with no network and no clock.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache

import holidays

__all__ = ["BusinessCalendar", "calendar_for", "customer_country"]

_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_REGION = re.compile(r"^[a-z]{2,3}(?:[-_][a-z]{4})?[-_]([a-z]{2})(?:[-_.@]|$)", re.IGNORECASE)
# A run of closed days longer than this is not a calendar (a guard for the loops below).
_LONGEST_CLOSURE = 31


def customer_country(country: str | None, locales: Sequence[str]) -> str | None:
    """The customer's country: their address's, else the region of their first regional
    locale ("pt-BR" -> "BR"), as `timezones.customer_timezone` reads it; else None."""
    if country and len(country.strip()) == 2:
        return country.strip().upper()
    for locale in locales:
        match = _REGION.match(locale.strip())
        if match:
            return match.group(1).upper()
    return None


@lru_cache(maxsize=128)
def _country_rules(country: str | None) -> tuple[frozenset[int], str | None]:
    """The country's weekend (0 = Monday) and the language its holiday names are read in."""
    if country is None:
        return frozenset({5, 6}), None
    try:
        known = holidays.country_holidays(country)
    except NotImplementedError:
        return frozenset({5, 6}), None
    languages = getattr(known, "supported_languages", ()) or ()
    # English names: the reason strings the dashboard shows are English.
    language = next((lang for lang in ("en_US", "en_GB", "en_IN") if lang in languages), None)
    return frozenset(getattr(known, "weekend", None) or {5, 6}), language


@lru_cache(maxsize=512)
def _holidays(country: str, year: int, language: str | None) -> dict[date, str]:
    try:
        found = holidays.country_holidays(country, years=year, language=language)
    except NotImplementedError:
        return {}
    return {day: str(name) for day, name in found.items()}


@dataclass(frozen=True, slots=True)
class BusinessCalendar:
    """Which days a customer's bank works; `country` None: weekends only."""

    country: str | None

    def holiday(self, day: date) -> str | None:
        """The public holiday's name on this day, or None."""
        if self.country is None:
            return None
        _weekend, language = _country_rules(self.country)
        return _holidays(self.country, day.year, language).get(day)

    def closed(self, day: date) -> str | None:
        """Why the bank does not work on this day ("Saturday", "Christmas Day"), or None."""
        name = self.holiday(day)
        if name is not None:
            return name
        weekend, _language = _country_rules(self.country)
        return _WEEKDAYS[day.weekday()] if day.weekday() in weekend else None

    def is_open(self, day: date) -> bool:
        return self.closed(day) is None

    def open_on_or_before(self, day: date) -> date:
        """The day itself if the bank works then, else the business day before it."""
        for _ in range(_LONGEST_CLOSURE):
            if self.is_open(day):
                return day
            day -= timedelta(days=1)
        return day

    def open_on_or_after(self, day: date) -> date:
        """The day itself if the bank works then, else the next business day."""
        for _ in range(_LONGEST_CLOSURE):
            if self.is_open(day):
                return day
            day += timedelta(days=1)
        return day

    def closed_run_after(self, day: date) -> list[date]:
        """The closed days right after `day`, up to the next business day: a payday on any of
        them is paid on `day` (if `day` is a business day)."""
        run: list[date] = []
        following = day + timedelta(days=1)
        while len(run) < _LONGEST_CLOSURE and not self.is_open(following):
            run.append(following)
            following += timedelta(days=1)
        return run


@lru_cache(maxsize=256)
def calendar_for(country: str | None) -> BusinessCalendar:
    code = country.strip().upper() if country else None
    return BusinessCalendar(code if code and len(code) == 2 and code.isalpha() else None)
