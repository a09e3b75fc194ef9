"""The weekly trend: per ISO week of the period (partial weeks at the edges included), the
cases opened that week and how much of them has been recovered so far - the same cohort as the
tiles (`cohort.py`), so the weeks add up to the tiles."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import Session

from recovery.domain.cases import CaseStatus
from recovery.models import RecoveryCase
from recovery.services.reporting.metrics.result import Week


def _as_date(value: Any) -> date:
    # SQLite's date() gives text, PostgreSQL's a date.
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def weekly(
    session: Session, cohort: ColumnElement[bool], period_from: datetime, period_to: datetime
) -> tuple[Week, ...]:
    return weeks_of(daily(session, cohort), period_from, period_to)


def daily(session: Session, cohort: ColumnElement[bool]) -> list[tuple[Any, int, int, int, int]]:
    """Summed per day by the database (a few hundred rows at most), then folded into ISO weeks
    by `weeks_of`: SQLite has no ISO-week function. Per day: cases, failed amount, recovered
    cases, recovered amount."""
    day = func.date(RecoveryCase.opened_at)
    is_recovered = RecoveryCase.status == CaseStatus.RECOVERED
    rows = session.execute(
        select(
            day,
            func.count(),
            func.coalesce(func.sum(RecoveryCase.amount_due), 0),
            func.coalesce(func.sum(case((is_recovered, 1), else_=0)), 0),
            func.coalesce(
                func.sum(case((is_recovered, RecoveryCase.amount_recovered), else_=0)), 0
            ),
        )
        .where(cohort)
        .group_by(day)
    ).all()
    return [(r[0], int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows]


def weeks_of(
    rows: Iterable[tuple[Any, int, int, int, int]], period_from: datetime, period_to: datetime
) -> tuple[Week, ...]:
    weeks: dict[tuple[int, int], list[int]] = {}
    first, last = period_from.date(), (period_to - timedelta(microseconds=1)).date()
    monday = first - timedelta(days=first.weekday())
    while monday <= last:
        iso = monday.isocalendar()
        weeks[(iso.year, iso.week)] = [0, 0, 0, 0]
        monday += timedelta(days=7)
    for r in rows:
        iso = _as_date(r[0]).isocalendar()
        slot = weeks.setdefault((iso.year, iso.week), [0, 0, 0, 0])
        for i in range(4):
            slot[i] += int(r[i + 1])
    return tuple(
        Week(f"{y}-W{w:02d}", date.fromisocalendar(y, w, 1), *sums)
        for (y, w), sums in sorted(weeks.items())
    )
