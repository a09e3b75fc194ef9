"""The overview's parameters: a period of calendar days and a currency, checked before any
query, and the currency to show when none is asked for."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta

from babel.numbers import list_currencies
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from recovery.models import CancelSession, RecoveryCase

CURRENCY_SHAPE = re.compile(r"[a-z]{3}")
KNOWN_CURRENCIES = frozenset(code.lower() for code in list_currencies())
DEFAULT_CURRENCY = "usd"
MAX_PERIOD = timedelta(days=3 * 366)


class BadPeriod(ValueError):
    """A period or currency the caller must fix (the API answers 400 with this message)."""


def check_currency(raw: str) -> str:
    code = raw.strip().lower()
    if not CURRENCY_SHAPE.fullmatch(code):
        raise BadPeriod("currency must be a three-letter ISO 4217 code, e.g. usd")
    if code not in KNOWN_CURRENCIES:
        raise BadPeriod(f"unknown currency {code!r}")
    return code


def period_of(day_from: date, day_to: date) -> tuple[datetime, datetime]:
    """Calendar days, both included, as the half-open UTC interval the queries use."""
    if day_from > day_to:
        raise BadPeriod("from must be on or before to")
    start = datetime(day_from.year, day_from.month, day_from.day, tzinfo=UTC)
    end = datetime(day_to.year, day_to.month, day_to.day, tzinfo=UTC) + timedelta(days=1)
    if end - start > MAX_PERIOD:
        raise BadPeriod("the period may span at most 3 years")
    return start, end


def default_currency(session: Session) -> str:
    """The currency most cases were in (then most cancel sessions), else usd."""
    return most_used(*use_counts(session))


def currencies_in_use(session: Session) -> list[str]:
    """Currencies that have cases, most used first (for the page's picker)."""
    return by_use(use_counts(session)[0])


def use_counts(session: Session) -> tuple[dict[str, int], dict[str, int]]:
    """Cases and cancel sessions per currency as stored, counted in the source tables (the
    overview reads them from the rollups: `rollups.use_counts`)."""
    found = []
    for column in (RecoveryCase.currency, CancelSession.currency):
        rows = session.execute(select(column, func.count()).group_by(column)).all()
        found.append({str(c): int(n) for c, n in rows if c is not None})
    return found[0], found[1]


def by_use(counts: Mapping[str, int]) -> list[str]:
    """Most used first, then by code as stored; lower-cased."""
    used = [c for c in counts if counts[c]]
    return [c.lower() for c in sorted(used, key=lambda c: (-counts[c], c))]


def most_used(cases: Mapping[str, int], sessions: Mapping[str, int]) -> str:
    for counts in (cases, sessions):
        ordered = by_use(counts)
        if ordered and ordered[0]:
            return ordered[0]
    return DEFAULT_CURRENCY
