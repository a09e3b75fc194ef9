"""Likely paydays, for retrying a card declined for insufficient funds when money has arrived.

A payday is a business day of the customer's country (`business_days`): one that falls on a
weekend or public holiday is paid on the business day before, as banks pay. The customer's own
payment days are days of the month on which the first attempt of their renewals succeeded, seen
at least twice (`own_payment_days`): one success is a coincidence, two are a pattern.

Pure: every input arrives as an argument.
"""

from __future__ import annotations

import calendar
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from recovery.domain.business_days import BusinessCalendar

__all__ = ["MIN_TIMES_SEEN", "OWN_DAY", "WEEKDAY_NAMES", "own_payment_days", "payday_slots"]

WEEKDAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
OWN_DAY = "their usual payment day"
# A day of the month is the customer's own once it carried two first-attempt successes.
MIN_TIMES_SEEN = 2
_DAY_ABBR = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTH_ABBR = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def own_payment_days(days: Iterable[int]) -> frozenset[int]:
    """Days of the month seen at least `MIN_TIMES_SEEN` times among `days` (each the local day
    on which a renewal's first attempt succeeded); other values are ignored."""
    seen = Counter(d for d in days if 1 <= d <= 31)
    return frozenset(d for d, n in seen.items() if n >= MIN_TIMES_SEEN)


def short_day(day: date) -> str:
    return f"{_DAY_ABBR[day.weekday()]} {day.day} {_MONTH_ABBR[day.month - 1]}"


@lru_cache(maxsize=256)
def _month_days(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


def _last_business_day(year: int, month: int, cal: BusinessCalendar) -> date:
    return cal.open_on_or_before(date(year, month, _month_days(year, month)))


def _nominal_labels(
    day: date,
    *,
    own: frozenset[int],
    days_of_month: tuple[int, ...],
    weekdays: frozenset[int],
) -> list[str]:
    """Why this calendar day would be a payday, before weekends and holidays move it."""
    month_end = day.day == _month_days(day.year, day.month)
    labels = []
    # A 31st in a 30-day month is paid on the 30th.
    if day.day in own or (month_end and max(own, default=0) > day.day):
        labels.append(OWN_DAY)
    if day.day in days_of_month or (month_end and max(days_of_month, default=0) > day.day):
        labels.append(f"day {day.day} of the month")
    if day.weekday() in weekdays:
        labels.append(WEEKDAY_NAMES[day.weekday()].capitalize())
    return labels


def payday_labels(
    day: date,
    cal: BusinessCalendar,
    *,
    own: frozenset[int],
    days_of_month: tuple[int, ...],
    weekday_names: tuple[str, ...],
    last_business_day: bool,
) -> list[str]:
    """Why `day` is a likely payday (empty: it is not). Only business days are paydays; a
    payday on the closed days right after `day` is paid on `day`, and says so."""
    if not cal.is_open(day):
        return []
    weekdays = frozenset(WEEKDAY_NAMES.index(n) for n in weekday_names)
    labels = _nominal_labels(day, own=own, days_of_month=days_of_month, weekdays=weekdays)
    for closed in cal.closed_run_after(day):
        why = cal.holiday(closed) or "a weekend"
        for label in _nominal_labels(
            closed, own=own, days_of_month=days_of_month, weekdays=weekdays
        ):
            labels.append(f"{label} (moved from {short_day(closed)}: {why})")
    if last_business_day and day == _last_business_day(day.year, day.month, cal):
        labels.append("last business day")
    # The own day first: it decides which slot is preferred.
    return sorted(labels, key=lambda label: not label.startswith(OWN_DAY))


def wall_clock(day: date, hour: int, zone: ZoneInfo) -> datetime:
    """`hour` o'clock on `day` in `zone`, in UTC."""
    naive = datetime(day.year, day.month, day.day) + timedelta(hours=hour)
    return naive.replace(tzinfo=zone).astimezone(UTC)


def payday_slots(
    start: datetime,
    end: datetime,
    zone: ZoneInfo,
    cal: BusinessCalendar,
    *,
    own: frozenset[int],
    days_of_month: tuple[int, ...],
    weekday_names: tuple[str, ...],
    last_business_day: bool,
    hours: tuple[int, int],
) -> Iterator[tuple[datetime, list[str]]]:
    """Morning-window openings (UTC) on likely paydays from `start` until `end`."""
    day = start.astimezone(zone).date()
    last_day = end.astimezone(zone).date()
    while day <= last_day:
        labels = payday_labels(
            day,
            cal,
            own=own,
            days_of_month=days_of_month,
            weekday_names=weekday_names,
            last_business_day=last_business_day,
        )
        if labels:
            opens = wall_clock(day, hours[0], zone)
            closes = wall_clock(day, hours[1], zone)
            at = max(start, opens)
            if at < closes and at < end:
                yield at, labels
        day += timedelta(days=1)
