"""Recovery by failure month (`definitions.DEFINITIONS["by_month"]`): for each of the last 12
calendar months (UTC) up to now, the cases of this currency opened that month, their failed
amount, and how much of it was paid within 30, 60 and 90 days of the failure (recovered cases
whose `closed_at - opened_at` is at most that long; the amount actually collected). A window
whose last day is still to come is not complete: its share can still grow.

Summed per day by the database (at most a year of rows), folded into months here: SQLite and
PostgreSQL truncate dates differently.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, select
from sqlalchemy.orm import Session

from recovery.domain.cases import CaseStatus
from recovery.models import RecoveryCase
from recovery.services.reporting.metrics.cohort import seconds_between
from recovery.services.reporting.metrics.result import MonthRecovery

MONTHS = 12
WINDOWS = (30, 60, 90)


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def month_starts(now: datetime, months: int = MONTHS) -> list[date]:
    """The first days of the last `months` calendar months, oldest first, this one last."""
    index = now.year * 12 + now.month - 1
    return [date((i // 12), i % 12 + 1, 1) for i in range(index - months + 1, index + 1)]


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def first_day(now: datetime) -> datetime:
    """The start of the oldest month shown."""
    start = month_starts(now)[0]
    return datetime(start.year, start.month, 1, tzinfo=UTC)


def within(session: Session, days: int) -> Any:
    """The amount collected within `days` days of the failure, summed."""
    took = seconds_between(session, RecoveryCase.opened_at, RecoveryCase.closed_at)
    paid_in_time = and_(RecoveryCase.status == CaseStatus.RECOVERED, took <= days * 86_400)
    return func.coalesce(func.sum(case((paid_in_time, RecoveryCase.amount_recovered), else_=0)), 0)


def by_month(session: Session, currency: str, now: datetime) -> tuple[MonthRecovery, ...]:
    shown = and_(
        RecoveryCase.currency == currency,
        RecoveryCase.opened_at >= first_day(now),
        RecoveryCase.opened_at <= now,
    )
    return months_of(daily(session, shown), now)


def daily(session: Session, where: ColumnElement[bool]) -> list[tuple[Any, ...]]:
    """Per day the cases `where` selects were opened: cases, failed amount, and the amount
    collected within each window."""
    day = func.date(RecoveryCase.opened_at)
    rows = session.execute(
        select(
            day,
            func.count(),
            func.coalesce(func.sum(RecoveryCase.amount_due), 0),
            *(within(session, d) for d in WINDOWS),
        )
        .where(where)
        .group_by(day)
    ).all()
    return [tuple(r) for r in rows]


def months_of(rows: Iterable[Sequence[Any]], now: datetime) -> tuple[MonthRecovery, ...]:
    starts = month_starts(now)
    sums = {start: [0, 0, 0, 0, 0] for start in starts}
    for r in rows:
        opened = _as_date(r[0])
        slot = sums.get(date(opened.year, opened.month, 1))
        if slot is None:
            continue
        for i in range(5):
            slot[i] += int(r[i + 1])
    out = []
    for start in starts:
        failed_count, failed_amount, r30, r60, r90 = sums[start]
        last_failure = datetime.combine(_next_month(start), datetime.min.time(), UTC)
        complete = tuple(last_failure + timedelta(days=d) <= now for d in WINDOWS)
        out.append(
            MonthRecovery(
                month=f"{start:%Y-%m}",
                starts=start,
                failed_count=failed_count,
                failed_amount=failed_amount,
                recovered_30=r30,
                recovered_60=r60,
                recovered_90=r90,
                complete_30=complete[0],
                complete_60=complete[1],
                complete_90=complete[2],
            )
        )
    return tuple(out)
