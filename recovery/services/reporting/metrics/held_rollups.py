"""Saves validated and recoveries durable at 30/60/90 days from the rollups (`HeldDayRollup`,
and `HeldEndRollup` for the windows that end today), the rest read directly
(`validated.read`): the `Validated` the direct path's `validated.validated` gives."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from recovery.domain.experiment_outcomes import WINDOWS, Held, HeldCounts, held
from recovery.models import CancelSession, HeldDayRollup, RecoveryCase
from recovery.models.rollups import HeldEndRollup
from recovery.services.reporting.metrics import validated
from recovery.services.reporting.metrics.rollup_refresh import as_date, within
from recovery.services.reporting.metrics.rollups import Plan, rolled_up
from recovery.services.reporting.metrics.validated import Validated


def held_counts(session: Session, currency: str, p: Plan, now: datetime) -> Validated:
    """Saves validated and recoveries durable: the rolled-up days' outcomes as of now (a window
    ending today by the hour it ends, one ending in this hour read directly), plus the direct
    computation of the rest."""
    today = now.date()
    keys = (
        HeldDayRollup.kind,
        HeldDayRollup.window_days,
        HeldDayRollup.end_day,
        HeldDayRollup.early,
        HeldDayRollup.outcome,
    )
    rows = rolled_up(
        session,
        p,
        select(*keys, func.sum(HeldDayRollup.count))
        .where(HeldDayRollup.currency == currency, p.rolled_up(HeldDayRollup.day))
        .group_by(*keys),
    )
    counts: Counter[tuple[str, int, Held]] = Counter()
    for kind, days, end_day, early, outcome, n in rows:
        ends = as_date(end_day)
        if ends == today:
            continue  # by the hour, below
        if early:
            counts[(kind, days, Held.NOT_HELD)] += int(n)
        elif ends > today:
            counts[(kind, days, Held.PENDING)] += int(n)
        else:
            counts[(kind, days, Held(outcome))] += int(n)
    # The rolled-up windows that end today, by the hour they end: before this hour they have
    # their outcome, after it they are pending (a cancellation before the end decides at once).
    hour = now.hour
    when = case(
        (HeldEndRollup.end_hour < hour, "ended"),
        (HeldEndRollup.end_hour > hour, "to_come"),
        else_="now",
    )
    today_keys = (
        HeldEndRollup.kind,
        HeldEndRollup.window_days,
        HeldEndRollup.early,
        HeldEndRollup.outcome,
        when,
    )
    for kind, days, early, outcome, ends, n in rolled_up(
        session,
        p,
        select(*today_keys, func.sum(HeldEndRollup.count))
        .where(
            HeldEndRollup.currency == currency,
            HeldEndRollup.end_day == today,
            p.rolled_up(HeldEndRollup.day),
        )
        .group_by(*today_keys),
    ):
        if ends == "now":
            continue  # read directly below
        if early:
            counts[(kind, days, Held.NOT_HELD)] += int(n)
        elif ends == "to_come":
            counts[(kind, days, Held.PENDING)] += int(n)
        else:
            counts[(kind, days, Held(outcome))] += int(n)
    # Directly: the dirty and partial days, and the rolled-up windows that end in this hour -
    # each window's hour its own part of one statement (an index range scan on decided_at /
    # closed_at; an OR of them with the period's ranges read every save or recovery).
    this_hour = datetime(today.year, today.month, today.day, hour, tzinfo=UTC)
    ending_now = [
        (this_hour - timedelta(days=d), this_hour - timedelta(days=d) + timedelta(hours=1))
        for d in WINDOWS
    ]
    clean = [
        (
            datetime.combine(a, datetime.min.time(), UTC),
            datetime.combine(b, datetime.min.time(), UTC),
        )
        for a, b in p.clean
    ]
    saves_also = [
        [
            CancelSession.currency == currency,
            CancelSession.decided_at >= a,
            CancelSession.decided_at < b,
            within(CancelSession.created_at, clean),
        ]
        for a, b in ending_now
    ]
    recoveries_also = [
        [
            RecoveryCase.currency == currency,
            RecoveryCase.closed_at >= a,
            RecoveryCase.closed_at < b,
            within(RecoveryCase.opened_at, clean),
        ]
        for a, b in ending_now
    ]
    saves, recoveries, invoices = validated.read(
        session,
        [CancelSession.currency == currency, p.live(CancelSession.created_at)]
        if p.direct
        else None,
        [RecoveryCase.currency == currency, p.live(RecoveryCase.opened_at)] if p.direct else None,
        saves_also=saves_also if clean else (),
        recoveries_also=recoveries_also if clean else (),
    )
    for kind, found in (("save", saves), ("recovery", recoveries)):
        for c in found:
            from_rollups = not any(a <= c.opened < b for a, b in p.direct)
            dues = invoices.get(c.subscription_id or "", [])
            for days in WINDOWS:
                ends = c.start + timedelta(days=days)
                if from_rollups and (ends.date() != today or ends.hour != hour):
                    continue
                counts[(kind, days, held(c.start, days, now, c.cancelled_at, dues))] += 1
    return Validated(
        saves=_counts(counts, "save"),
        recoveries=_counts(counts, "recovery"),
    )


def _counts(counts: Counter[tuple[str, int, Held]], kind: str) -> tuple[HeldCounts, ...]:
    return tuple(
        HeldCounts(
            d,
            counts[(kind, d, Held.HELD)],
            counts[(kind, d, Held.NOT_HELD)],
            counts[(kind, d, Held.PENDING)],
        )
        for d in WINDOWS
    )
