"""The worker's side of the overview's rollups (models/rollups.py): the rows of every dirty
(day, currency) recomputed from the source tables by the same queries the direct computation
runs, grouped by day as well - so a rolled-up day sums to exactly what the direct path finds.

Each chunk (one currency, up to a month of dirty days) is one transaction. On PostgreSQL it
runs in REPEATABLE READ: the dirty rows it deletes are those of its own snapshot, the one its
figures were computed from, so a change committed meanwhile keeps its own dirty row and its
day is computed directly until the next refresh. One worker refreshes at a time (an advisory
lock; the others skip). SQLite has one writer at a time anyway.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, false, func, insert, or_, select, text
from sqlalchemy.orm import Session

from recovery.domain.experiment_outcomes import WINDOWS, held
from recovery.models import (
    CancelDayRollup,
    CancelSession,
    CaseDayRollup,
    ChannelDayRollup,
    HeldDayRollup,
    OverviewDirtyDay,
    RecoveryCase,
)
from recovery.models.rollups import (
    CaseStatusDayRollup,
    CurrencyDayRollup,
    HeldEndRollup,
    RecoveryTimeDayRollup,
)
from recovery.runtime import Runtime
from recovery.services.reporting.metrics import by_month, validated
from recovery.services.reporting.metrics.cancel_flow import session_groups
from recovery.services.reporting.metrics.cohort import GROUP_KEYS, days_taken
from recovery.services.reporting.metrics.reminder_channels import last_channels

JOB_NAME = "overview_rollups"
CHUNK_DAYS = 31
MAX_CHUNKS = 10_000  # a bound on one run; what is left is done by the next
LOCK_KEY = zlib.crc32(JOB_NAME.encode())
# held() as it will be once every window has ended: the outcome a pending window turns into
ENDED = datetime.max.replace(tzinfo=UTC) - timedelta(days=1)


def as_date(value: Any) -> date:
    """SQLite's date() gives text, PostgreSQL's a date."""
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def day_ranges(days: Iterable[date]) -> list[tuple[datetime, datetime]]:
    """Days as half-open UTC intervals, consecutive days merged."""
    out: list[tuple[datetime, datetime]] = []
    for day in sorted(set(days)):
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        if out and out[-1][1] == start:
            out[-1] = (out[-1][0], start + timedelta(days=1))
        else:
            out.append((start, start + timedelta(days=1)))
    return out


def within(column: Any, ranges: Sequence[tuple[datetime, datetime]]) -> ColumnElement[bool]:
    if not ranges:
        return false()
    return or_(*(and_(column >= a, column < b) for a, b in ranges))


def refresh(rt: Runtime) -> int:
    """Bring every dirty day up to date; returns how many (day, currency) were recomputed."""
    db = rt.db
    if not db.is_postgres:
        return _chunks(lambda: _in_transaction(db.transaction))
    with db.engine.connect() as conn:
        locked = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar()
        conn.commit()
        if not locked:
            return 0
        try:
            conn.execution_options(isolation_level="REPEATABLE READ")

            def one() -> int:
                with Session(bind=conn) as session, session.begin():
                    return refresh_chunk(session)

            return _chunks(one)
        finally:
            conn.rollback()
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
            conn.commit()


def _in_transaction(transaction: Any) -> int:
    with transaction() as session:
        return refresh_chunk(session)


def _chunks(run: Any) -> int:
    total = 0
    for _ in range(MAX_CHUNKS):
        done = int(run())
        if not done:
            break
        total += done
    return total


def refresh_chunk(session: Session) -> int:
    """Recompute the oldest dirty days of one currency (at most CHUNK_DAYS); returns how many."""
    dirty = session.execute(
        select(OverviewDirtyDay.currency, OverviewDirtyDay.day, func.max(OverviewDirtyDay.id))
        .group_by(OverviewDirtyDay.currency, OverviewDirtyDay.day)
        .order_by(OverviewDirtyDay.currency, OverviewDirtyDay.day)
    ).all()
    if not dirty:
        return 0
    currency = str(dirty[0][0])
    picked = [r for r in dirty if r[0] == currency][:CHUNK_DAYS]
    days = [as_date(r[1]) for r in picked]
    recompute(session, currency, days)
    session.execute(
        delete(OverviewDirtyDay).where(
            OverviewDirtyDay.currency == currency,
            OverviewDirtyDay.day.in_(days),
            OverviewDirtyDay.id <= max(int(r[2]) for r in picked),
        )
    )
    return len(days)


def recompute(session: Session, currency: str, days: Sequence[date]) -> None:
    """Replace the rollup rows of these days of `currency` by what the source tables say."""
    for model in (
        CaseDayRollup,
        CaseStatusDayRollup,
        CancelDayRollup,
        HeldDayRollup,
        ChannelDayRollup,
        CurrencyDayRollup,
        HeldEndRollup,
        RecoveryTimeDayRollup,
    ):
        session.execute(delete(model).where(model.currency == currency, model.day.in_(days)))
    ranges = day_ranges(days)
    cases = and_(RecoveryCase.currency == currency, within(RecoveryCase.opened_at, ranges))
    sessions = and_(CancelSession.currency == currency, within(CancelSession.created_at, ranges))
    rows = _case_rows(session, currency, cases)
    if rows:
        session.execute(insert(CaseDayRollup), rows)
        session.execute(insert(CaseStatusDayRollup), _by_status(rows))
    rows = [
        {
            "day": as_date(day),
            "currency": currency,
            "outcome": outcome or "",
            "reason": reason or "",
            "reversed": bool(was_reversed),
            "sessions": int(n),
            "mrr_before": int(before or 0),
            "mrr_after": int(after or 0),
        }
        for day, outcome, reason, was_reversed, n, before, after in session_groups(
            session, sessions, by_day=True
        )
    ]
    if rows:
        session.execute(insert(CancelDayRollup), rows)
    counts: dict[date, dict[str, Any]] = {}
    for column, where, name in (
        (RecoveryCase.opened_at, cases, "cases"),
        (CancelSession.created_at, sessions, "sessions"),
    ):
        day = func.date(column)
        for found, n in session.execute(select(day, func.count()).where(where).group_by(day)):
            slot = counts.setdefault(
                as_date(found),
                {"day": as_date(found), "currency": currency, "cases": 0, "sessions": 0},
            )
            slot[name] = int(n)
    if counts:
        session.execute(insert(CurrencyDayRollup), list(counts.values()))
    day, taken = func.date(RecoveryCase.opened_at), days_taken(session)
    rows = [
        {"day": as_date(d), "currency": currency, "days_taken": int(t), "cases": int(n)}
        for d, t, n in session.execute(
            select(day, taken, func.count())
            .where(cases, RecoveryCase.status == "recovered", RecoveryCase.closed_at.is_not(None))
            .group_by(day, taken)
        )
    ]
    if rows:
        session.execute(insert(RecoveryTimeDayRollup), rows)
    rows, by_hour = _held_rows(session, currency, cases, sessions)
    if rows:
        session.execute(insert(HeldDayRollup), rows)
        session.execute(insert(HeldEndRollup), by_hour)
    rows = [
        {
            "day": as_date(day),
            "currency": currency,
            "channel": str(channel),
            "cases": int(n),
            "amount": int(amount),
        }
        for day, channel, n, amount in last_channels(session, cases, by_day=True)
    ]
    if rows:
        session.execute(insert(ChannelDayRollup), rows)


def _case_rows(session: Session, currency: str, cases: ColumnElement[bool]) -> list[dict[str, Any]]:
    day = func.date(RecoveryCase.opened_at)
    found = session.execute(
        select(
            day,
            *GROUP_KEYS,
            func.count(),
            func.coalesce(func.sum(RecoveryCase.amount_due), 0),
            func.coalesce(func.sum(RecoveryCase.amount_recovered), 0),
            *(by_month.within(session, d) for d in by_month.WINDOWS),
        )
        .where(cases)
        .group_by(day, *GROUP_KEYS)
    ).all()
    names = ("status", "close_reason", "recovered_via", "decline_category", "card_brand")
    sums = ("cases", "amount_due", "amount_recovered", "recovered_30", "recovered_60")
    return [
        {
            "day": as_date(r[0]),
            "currency": currency,
            **{name: r[1 + i] or "" for i, name in enumerate(names)},
            **{name: int(r[6 + i]) for i, name in enumerate(sums)},
            "recovered_90": int(r[11]),
        }
        for r in found
    ]


CASE_SUMS = (
    "cases",
    "amount_due",
    "amount_recovered",
    "recovered_30",
    "recovered_60",
    "recovered_90",
)


def _by_status(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """`CaseStatusDayRollup`'s rows: the case rows summed per day and status."""
    out: dict[tuple[date, str], dict[str, Any]] = {}
    for r in rows:
        slot = out.setdefault(
            (r["day"], r["status"]),
            {"day": r["day"], "currency": r["currency"], "status": r["status"]}
            | dict.fromkeys(CASE_SUMS, 0),
        )
        for name in CASE_SUMS:
            slot[name] += r[name]
    return list(out.values())


def _held_rows(
    session: Session,
    currency: str,
    cases: ColumnElement[bool],
    sessions: ColumnElement[bool],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`HeldDayRollup`'s rows and `HeldEndRollup`'s (the same, by the hour a window ends)."""
    saves, recoveries, invoices = validated.read(session, [sessions], [cases])
    counts: Counter[tuple[str, date, int, date, int, bool, str]] = Counter()
    for kind, found in (("save", saves), ("recovery", recoveries)):
        for c in found:
            dues = invoices.get(c.subscription_id or "", [])
            for days in WINDOWS:
                end = c.start + timedelta(days=days)
                early = c.cancelled_at is not None and c.cancelled_at < end
                ended = held(c.start, days, ENDED, c.cancelled_at, dues).value
                key = (kind, c.opened.date(), days, end.date(), end.hour, early, ended)
                counts[key] += 1
    by_day: Counter[tuple[str, date, int, date, bool, str]] = Counter()
    for (kind, day, days, end_day, _hour, early, outcome), n in counts.items():
        by_day[(kind, day, days, end_day, early, outcome)] += n
    return [
        {
            "day": day,
            "currency": currency,
            "kind": kind,
            "window_days": days,
            "end_day": end_day,
            "early": early,
            "outcome": outcome,
            "count": n,
        }
        for (kind, day, days, end_day, early, outcome), n in by_day.items()
    ], [
        {
            "day": day,
            "currency": currency,
            "kind": kind,
            "window_days": days,
            "end_day": end_day,
            "end_hour": hour,
            "early": early,
            "outcome": outcome,
            "count": n,
        }
        for (kind, day, days, end_day, hour, early, outcome), n in counts.items()
    ]
