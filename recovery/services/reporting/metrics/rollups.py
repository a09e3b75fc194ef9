"""The overview's additive figures read from the rollups (models/rollups.py, kept by
`rollup_refresh`): the clean days' rows summed, plus the direct computation - the very queries
of the direct path - over the rest of the period (dirty days, and the partial days at its
edges). Each function returns the rows the direct path's folding step takes (`figures_of`,
`weeks_of`, `months_of`, `stats_of`, `summaries_of`), so both paths share every definition.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, false, func, or_, select
from sqlalchemy.orm import Session

from recovery.domain.cases import CaseStatus
from recovery.domain.offers import monthly_amount
from recovery.models import (
    CancelDayRollup,
    CancelSession,
    CaseDayRollup,
    ChannelDayRollup,
    OverviewDirtyDay,
    RecoveryCase,
)
from recovery.models.rollups import (
    CaseStatusDayRollup,
    CurrencyDayRollup,
    RecoveredPrice,
    RecoveryTimeDayRollup,
)
from recovery.services.reporting.metrics import (
    by_month,
    cancel_flow,
    cohort,
    reminder_channels,
    weekly,
)
from recovery.services.reporting.metrics.rollup_refresh import as_date, day_ranges, within


@dataclass(frozen=True)
class Plan:
    """Which part of a period the rollups answer (whole clean days) and which the source."""

    clean: tuple[tuple[date, date], ...]  # [first, after) runs of clean days
    direct: tuple[tuple[datetime, datetime], ...]  # [from, to) instants

    def rolled_up(self, day: Any) -> ColumnElement[bool]:
        if not self.clean:
            return false()
        return or_(*(and_(day >= a, day < b) for a, b in self.clean))

    def live(self, at: Any) -> ColumnElement[bool]:
        return within(at, self.direct)


def dirty_days(session: Session) -> dict[str, set[date]]:
    """Per currency, the days not to read from the rollups (one statement)."""
    out: dict[str, set[date]] = {}
    query = select(OverviewDirtyDay.currency, OverviewDirtyDay.day).distinct()
    for currency, day in session.execute(query):
        out.setdefault(str(currency), set()).add(as_date(day))
    return out


def use_counts(
    session: Session, dirty: dict[str, set[date]]
) -> tuple[dict[str, int], dict[str, int]]:
    """`parameters.use_counts` - cases and sessions per currency - from the rollups, the dirty
    days counted in the source tables: one statement, three with dirty days."""
    stale = or_(
        false(),
        *(
            and_(CurrencyDayRollup.currency == c, CurrencyDayRollup.day.in_(sorted(days)))
            for c, days in dirty.items()
        ),
    )
    cases: Counter[str] = Counter()
    sessions: Counter[str] = Counter()
    for currency, n, m in session.execute(
        select(
            CurrencyDayRollup.currency,
            func.sum(CurrencyDayRollup.cases),
            func.sum(CurrencyDayRollup.sessions),
        )
        .where(~stale)
        .group_by(CurrencyDayRollup.currency)
    ):
        cases[str(currency)] += int(n)
        sessions[str(currency)] += int(m)
    if dirty:
        for column, at, counts in (
            (RecoveryCase.currency, RecoveryCase.opened_at, cases),
            (CancelSession.currency, CancelSession.created_at, sessions),
        ):
            live = or_(*(and_(column == c, within(at, day_ranges(d))) for c, d in dirty.items()))
            for currency, n in session.execute(
                select(column, func.count()).where(live).group_by(column)
            ):
                counts[str(currency)] += int(n)
    return (
        {c: n for c, n in cases.items() if n},
        {c: n for c, n in sessions.items() if n},
    )


def recovered_mrr_by_currency(session: Session, start: datetime, end: datetime) -> dict[str, int]:
    """`cohort.recovered_mrr_by_currency` for the cases opened in [start, end), from the prices
    the triggers keep (`RecoveredPrice`): each (currency, subscription, cadence, amount) once -
    its first row in the period, the one whose previous row (`prev_opened_at`) is none or
    before it - summed per cadence as the rows come off the index, rounded once per cadence as
    there (a DISTINCT of the 46k rows of 90 days took 26-35 ms, bench/dashboard_scale.py)."""
    first = or_(RecoveredPrice.prev_opened_at.is_(None), RecoveredPrice.prev_opened_at < start)
    out: dict[str, int] = {}
    for currency, interval, count, amount in session.execute(
        select(
            RecoveredPrice.currency,
            RecoveredPrice.interval,
            RecoveredPrice.interval_count,
            func.sum(RecoveredPrice.amount),
        )
        .where(RecoveredPrice.opened_at >= start, RecoveredPrice.opened_at < end, first)
        .group_by(RecoveredPrice.currency, RecoveredPrice.interval, RecoveredPrice.interval_count)
    ):
        key = str(currency)
        out[key] = out.get(key, 0) + monthly_amount(int(amount), interval, int(count or 1))
    return out


def plan(dirty: set[date], start: datetime, end: datetime) -> Plan:
    """Whole days in [start, end) that are clean come from the rollups; the rest directly."""
    first = datetime.combine(start.date(), datetime.min.time(), UTC)
    if first < start:
        first += timedelta(days=1)
    last = datetime.combine(end.date(), datetime.min.time(), UTC)
    if first >= last:
        return Plan((), ((start, end),) if start < end else ())
    clean: list[tuple[date, date]] = []
    direct: list[tuple[datetime, datetime]] = [(start, first)] if start < first else []
    day = first
    while day < last:
        after = day + timedelta(days=1)
        if day.date() in dirty:
            if direct and direct[-1][1] == day:
                direct[-1] = (direct[-1][0], after)
            else:
                direct.append((day, after))
        elif clean and clean[-1][1] == day.date():
            clean[-1] = (clean[-1][0], after.date())
        else:
            clean.append((day.date(), after.date()))
        day = after
    if last < end:
        if direct and direct[-1][1] == last:
            direct[-1] = (direct[-1][0], end)
        else:
            direct.append((last, end))
    return Plan(tuple(clean), tuple(direct))


def _none(value: str) -> str | None:
    return value or None


def case_groups(session: Session, currency: str, p: Plan) -> list[cohort.CaseGroup]:
    keys = (
        CaseDayRollup.status,
        CaseDayRollup.close_reason,
        CaseDayRollup.recovered_via,
        CaseDayRollup.decline_category,
        CaseDayRollup.card_brand,
    )
    rows = rolled_up(
        session,
        p,
        select(
            *keys,
            func.sum(CaseDayRollup.cases),
            func.sum(CaseDayRollup.amount_due),
            func.sum(CaseDayRollup.amount_recovered),
        )
        .where(CaseDayRollup.currency == currency, p.rolled_up(CaseDayRollup.day))
        .group_by(*keys),
    )
    rolled = [
        cohort.CaseGroup(
            r[0],
            _none(r[1]),
            _none(r[2]),
            _none(r[3]),
            _none(r[4]),
            int(r[5]),
            int(r[6]),
            int(r[7]),
        )
        for r in rows
    ]
    return rolled + (cohort.case_groups(session, _cases(currency, p)) if p.direct else [])


def _cases(currency: str, p: Plan) -> ColumnElement[bool]:
    return and_(RecoveryCase.currency == currency, p.live(RecoveryCase.opened_at))


def daily_cases(session: Session, currency: str, p: Plan) -> list[tuple[Any, int, int, int, int]]:
    """`weekly.daily`'s rows: per day, cases, failed amount, recovered cases and amount."""
    t = CaseStatusDayRollup
    recovered = t.status == CaseStatus.RECOVERED.value
    rows = rolled_up(
        session,
        p,
        select(
            t.day,
            func.sum(t.cases),
            func.sum(t.amount_due),
            func.sum(case((recovered, t.cases), else_=0)),
            func.sum(case((recovered, t.amount_recovered), else_=0)),
        )
        .where(t.currency == currency, p.rolled_up(t.day))
        .group_by(t.day),
    )
    rolled = [(r[0], int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows]
    return rolled + (weekly.daily(session, _cases(currency, p)) if p.direct else [])


def monthly_cases(
    session: Session, currency: str, dirty: set[date], now: datetime
) -> list[tuple[Any, ...]]:
    """`by_month.daily`'s rows for the months shown: opened up to now, included."""
    p = plan(dirty, by_month.first_day(now), now + timedelta.resolution)
    t = CaseStatusDayRollup
    rows = rolled_up(
        session,
        p,
        select(
            t.day,
            func.sum(t.cases),
            func.sum(t.amount_due),
            func.sum(t.recovered_30),
            func.sum(t.recovered_60),
            func.sum(t.recovered_90),
        )
        .where(t.currency == currency, p.rolled_up(t.day))
        .group_by(t.day),
    )
    return rows + (by_month.daily(session, _cases(currency, p)) if p.direct else [])


def status_sums(
    session: Session, dirty: dict[str, set[date]], start: datetime, end: datetime
) -> list[tuple[Any, ...]]:
    """`cohort.status_sums`'s rows, every currency: a day dirty in one is read directly."""
    p = plan(set().union(*dirty.values()), start, end)
    t = CaseStatusDayRollup
    rows = rolled_up(
        session,
        p,
        select(
            t.currency,
            t.status,
            func.sum(t.cases),
            func.sum(t.amount_due),
            func.sum(t.amount_recovered),
        )
        .where(p.rolled_up(t.day))
        .group_by(t.currency, t.status),
    )
    if not p.direct:
        return rows
    return rows + cohort.status_sums(session, p.live(RecoveryCase.opened_at))


def median_days(
    session: Session, currency: str, p: Plan, start: datetime, end: datetime
) -> float | None:
    """`cohort.median_days` of the cases opened in [start, end): the histogram of whole days
    taken (rollups, and the source for the rest) says which day(s) the middle recoveries fall
    in and how many come before; only those days' recoveries are read, in order."""
    hist: Counter[int] = Counter()
    for taken, n in rolled_up(
        session,
        p,
        select(RecoveryTimeDayRollup.days_taken, func.sum(RecoveryTimeDayRollup.cases))
        .where(RecoveryTimeDayRollup.currency == currency, p.rolled_up(RecoveryTimeDayRollup.day))
        .group_by(RecoveryTimeDayRollup.days_taken),
    ):
        hist[int(taken)] += int(n)
    recovered = and_(
        RecoveryCase.status == CaseStatus.RECOVERED, RecoveryCase.closed_at.is_not(None)
    )
    if p.direct:
        taken = cohort.days_taken(session)
        for days, n in session.execute(
            select(taken, func.count()).where(_cases(currency, p), recovered).group_by(taken)
        ):
            hist[int(days)] += int(n)
    n = sum(hist.values())
    if not n:
        return None
    low, high = (n + 1) // 2, (n + 2) // 2  # 1-based ranks of the middle value(s)
    first, last, before, seen = 0, 0, 0, 0
    for days in sorted(hist):
        if seen < low <= seen + hist[days]:
            first, before = days, seen
        if seen < high <= seen + hist[days]:
            last = days
            break
        seen += hist[days]
    seconds = cohort.seconds_between(session, RecoveryCase.opened_at, RecoveryCase.closed_at)
    bounds = [seconds < (0 if last < 0 else (last + 1) * 86_400)]
    if first >= 0:
        bounds.append(seconds >= first * 86_400)
    middle = session.scalars(
        select(seconds)
        .where(cohort.cohort_of(currency, start, end), recovered, *bounds)
        .order_by(seconds)
        .offset(low - 1 - before)
        .limit(high - low + 1)
    ).all()
    values = [float(v) for v in middle]
    return round(sum(values) / len(values) / 86400, 2)


def channel_rows(session: Session, currency: str, p: Plan) -> list[tuple[Any, ...]]:
    """`reminder_channels.last_channels`'s rows: (channel, recoveries, amount)."""
    rows = rolled_up(
        session,
        p,
        select(
            ChannelDayRollup.channel,
            func.sum(ChannelDayRollup.cases),
            func.sum(ChannelDayRollup.amount),
        )
        .where(ChannelDayRollup.currency == currency, p.rolled_up(ChannelDayRollup.day))
        .group_by(ChannelDayRollup.channel),
    )
    live = reminder_channels.last_channels(session, _cases(currency, p)) if p.direct else []
    return rows + live


def session_groups(session: Session, currency: str, p: Plan) -> list[tuple[Any, ...]]:
    """`cancel_flow.session_groups`'s rows."""
    keys = (CancelDayRollup.outcome, CancelDayRollup.reason, CancelDayRollup.reversed)
    rows = rolled_up(
        session,
        p,
        select(
            *keys,
            func.sum(CancelDayRollup.sessions),
            func.sum(CancelDayRollup.mrr_before),
            func.sum(CancelDayRollup.mrr_after),
        )
        .where(CancelDayRollup.currency == currency, p.rolled_up(CancelDayRollup.day))
        .group_by(*keys),
    )
    rolled = [(_none(r[0]), _none(r[1]), bool(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in rows]
    live = and_(CancelSession.currency == currency, p.live(CancelSession.created_at))
    return rolled + (cancel_flow.session_groups(session, live) if p.direct else [])


def rolled_up(session: Session, p: Plan, query: Select[*tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The rollup rows `query` sums, when some day of the period is rolled up."""
    return [tuple(r) for r in session.execute(query).all()] if p.clean else []
