"""The overview's parameters: a period of calendar days and a currency, checked before any
query, and the currency to show when none is asked for."""

from __future__ import annotations

import re
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
    for column in (RecoveryCase.currency, CancelSession.currency):
        row = session.execute(
            select(column).group_by(column).order_by(func.count().desc(), column).limit(1)
        ).first()
        if row is not None and row[0]:
            return str(row[0]).lower()
    return DEFAULT_CURRENCY


def currencies_in_use(session: Session) -> list[str]:
    """Currencies that have cases, most used first (for the page's picker)."""
    rows = session.execute(
        select(RecoveryCase.currency)
        .group_by(RecoveryCase.currency)
        .order_by(func.count().desc(), RecoveryCase.currency)
    ).all()
    return [str(r[0]).lower() for r in rows]
