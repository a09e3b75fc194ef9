"""The cohort's figures: the overview's tiles and breakdowns of failed payments. The words the
overview prints for each are `definitions.DEFINITIONS`; this is how they are computed.

The cohort is the recovery cases *opened* in the period (one case per failed invoice) in one
currency, each counted in the state it is in *now*. So a case that failed on the 30th and was
paid on the 2nd of the next month counts as failed and as recovered in the period it failed in,
and `failed = recovered + in progress + lost` always holds, in count and amount.

- failed: cases opened in the period; amount = what was owed when the case opened.
- recovered: those whose status is `recovered` (money arrived, including late payments after
  dunning ended); amount = what was actually collected (`amount_recovered`).
  `recovered_share` = recovered amount / failed amount (None when nothing failed).
- in progress: status open, retrying or awaiting the customer; amount = amount owed.
- lost: ended without payment - dunning ran out (`lost`) or there was nothing left to collect
  (`closed`: voided, marked uncollectible, subscription cancelled, deleted); amount = amount owed.
  `lost_reasons` splits them: `dunning_ended` or the close reason.
- recovered monthly revenue: the distinct subscriptions behind the recovered cases, each at its
  current mirrored items: unit amount x quantity per billing period, summed per billing cadence
  and turned into a monthly amount with `domain.offers.monthly_amount` (a year is 1/12 month, a
  week 52/12 per month, a day 365/12, divided by the interval count), rounded once per cadence.
  Metered items (no unit amount) count as 0. A subscription recovered twice counts once.
- median days to recover: the median of (closed_at - opened_at) over recovered cases, in days
  (two decimals); for an even count, the mean of the two middle values. None with no recovery.
- by decline category / card brand: failed and recovered per the case's last known decline
  category and card brand (`unknown` when not known).
- by trigger (`recovered_via`): our retry, card-update link, hosted invoice page, Stripe's own
  retry, paid outside Stripe - as recorded when the money arrived (services/cases).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Integer, and_, case, cast, extract, func, select
from sqlalchemy.orm import Session

from recovery.db import dialect_of
from recovery.domain.cases import ACTIVE, CaseStatus, RecoveredVia
from recovery.domain.offers import monthly_amount
from recovery.models import RecoveryCase, SubscriptionItem
from recovery.services.reporting.metrics.result import Breakdown, Keyed, Tally, share

# Recoveries the customer made (after a reminder, or not); the rest are charges we or Stripe ran.
AUTOMATIC = (RecoveredVia.OUR_RETRY.value, RecoveredVia.STRIPE_RETRY.value)
LOST_STATUSES = (CaseStatus.LOST.value, CaseStatus.CLOSED.value)


def cohort_of(currency: str, period_from: datetime, period_to: datetime) -> ColumnElement[bool]:
    """The cases opened in `[period_from, period_to)` in `currency`."""
    return and_(
        RecoveryCase.currency == currency,
        RecoveryCase.opened_at >= period_from,
        RecoveryCase.opened_at < period_to,
    )


@dataclass(frozen=True)
class CohortFigures:
    """The overview's case figures but the weekly trend and the reminder channels."""

    failed: Tally
    recovered: Tally
    recovered_share: float | None
    in_progress: Tally
    lost: Tally
    lost_reasons: tuple[Keyed, ...]
    by_decline_category: tuple[Breakdown, ...]
    by_card_brand: tuple[Breakdown, ...]
    by_trigger: tuple[Keyed, ...]
    customer_made: Tally  # recoveries the customer made: the reminder channels' whole


def cohort_figures(session: Session, cohort: ColumnElement[bool]) -> CohortFigures:
    return figures_of(case_groups(session, cohort))


def figures_of(groups: Sequence[CaseGroup]) -> CohortFigures:
    """The figures from the cohort's groups, however they were summed (source or rollups)."""
    failed = Tally(sum(g.count for g in groups), sum(g.amount_due for g in groups))
    recovered_groups = [g for g in groups if g.status == CaseStatus.RECOVERED]
    recovered = Tally(
        sum(g.count for g in recovered_groups), sum(g.amount_recovered for g in recovered_groups)
    )
    active = {s.value for s in ACTIVE}
    lost_groups = [g for g in groups if g.status in LOST_STATUSES]
    lost_reasons: Counter[str] = Counter()
    lost_amounts: Counter[str] = Counter()
    for g in lost_groups:
        key = "dunning_ended" if g.status == CaseStatus.LOST else (g.close_reason or "closed")
        lost_reasons[key] += g.count
        lost_amounts[key] += g.amount_due
    triggers = {v.value: [0, 0] for v in RecoveredVia}
    for g in recovered_groups:
        slot = triggers.setdefault(g.recovered_via or "unknown", [0, 0])
        slot[0] += g.count
        slot[1] += g.amount_recovered
    return CohortFigures(
        failed=failed,
        recovered=recovered,
        recovered_share=share(recovered.amount, failed.amount),
        in_progress=_tally(g for g in groups if g.status in active),
        lost=_tally(lost_groups),
        lost_reasons=tuple(
            Keyed(k, lost_reasons[k], lost_amounts[k]) for k in sorted(lost_reasons)
        ),
        by_decline_category=_breakdown(groups, "decline_category"),
        by_card_brand=_breakdown(groups, "card_brand"),
        by_trigger=tuple(Keyed(k, c, a) for k, (c, a) in triggers.items()),
        customer_made=Tally(
            sum(g.count for g in recovered_groups if g.recovered_via not in AUTOMATIC),
            sum(g.amount_recovered for g in recovered_groups if g.recovered_via not in AUTOMATIC),
        ),
    )


@dataclass(frozen=True)
class CaseGroup:
    status: str
    close_reason: str | None
    recovered_via: str | None
    decline_category: str | None
    card_brand: str | None
    count: int
    amount_due: int
    amount_recovered: int


GROUP_KEYS = (
    RecoveryCase.status,
    RecoveryCase.close_reason,
    RecoveryCase.recovered_via,
    RecoveryCase.decline_category,
    RecoveryCase.card_brand,
)


def case_groups(session: Session, cohort: ColumnElement[bool]) -> list[CaseGroup]:
    """One GROUP BY over the cohort: every case figure but the median and the trend is a sum of
    these few rows (statuses x reasons x triggers x categories x brands actually seen)."""
    rows = session.execute(
        select(
            *GROUP_KEYS,
            func.count(),
            func.coalesce(func.sum(RecoveryCase.amount_due), 0),
            func.coalesce(func.sum(RecoveryCase.amount_recovered), 0),
        )
        .where(cohort)
        .group_by(*GROUP_KEYS)
    ).all()
    return [CaseGroup(r[0], r[1], r[2], r[3], r[4], int(r[5]), int(r[6]), int(r[7])) for r in rows]


def _tally(groups: Iterable[CaseGroup]) -> Tally:
    count = amount = 0
    for g in groups:
        count += g.count
        amount += g.amount_due
    return Tally(count, amount)


def _breakdown(groups: Sequence[CaseGroup], attr: str) -> tuple[Breakdown, ...]:
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for g in groups:
        slot = sums[getattr(g, attr) or "unknown"]
        slot[0] += g.count
        slot[1] += g.amount_due
        if g.status == CaseStatus.RECOVERED:
            slot[2] += g.count
            slot[3] += g.amount_recovered
    ordered = sorted(sums.items(), key=lambda kv: (-kv[1][1], kv[0]))  # biggest failed first
    return tuple(Breakdown(k, f, fa, r, ra, share(ra, fa)) for k, (f, fa, r, ra) in ordered)


def recovered_mrr(session: Session, cohort: ColumnElement[bool]) -> int:
    recovered_subs = select(RecoveryCase.subscription_id).where(
        cohort, RecoveryCase.status == CaseStatus.RECOVERED
    )
    rows = session.execute(
        select(
            SubscriptionItem.interval,
            SubscriptionItem.interval_count,
            func.coalesce(
                func.sum(
                    func.coalesce(SubscriptionItem.unit_amount, 0) * SubscriptionItem.quantity
                ),
                0,
            ),
        )
        .where(SubscriptionItem.subscription_id.in_(recovered_subs))
        .group_by(SubscriptionItem.interval, SubscriptionItem.interval_count)
    ).all()
    return sum(monthly_amount(int(r[2]), r[0], int(r[1] or 1)) for r in rows)


def recovered_mrr_by_currency(session: Session, in_period: ColumnElement[bool]) -> dict[str, int]:
    """`recovered_mrr` for every currency at once (the cases' currency as stored), one
    statement: the overview's tile is its entry for the overview's currency."""
    recovered_subs = (
        select(RecoveryCase.currency.label("currency"), RecoveryCase.subscription_id.label("sub"))
        .where(in_period, RecoveryCase.status == CaseStatus.RECOVERED)
        .distinct()
        .subquery()
    )
    rows = session.execute(
        select(
            recovered_subs.c.currency,
            SubscriptionItem.interval,
            SubscriptionItem.interval_count,
            func.coalesce(
                func.sum(
                    func.coalesce(SubscriptionItem.unit_amount, 0) * SubscriptionItem.quantity
                ),
                0,
            ),
        )
        .join(SubscriptionItem, SubscriptionItem.subscription_id == recovered_subs.c.sub)
        .group_by(
            recovered_subs.c.currency, SubscriptionItem.interval, SubscriptionItem.interval_count
        )
    ).all()
    out: dict[str, int] = {}
    for currency, interval, count, amount in rows:
        key = str(currency)
        out[key] = out.get(key, 0) + monthly_amount(int(amount), interval, int(count or 1))
    return out


def seconds_between(session: Session, start: Any, end: Any) -> ColumnElement[Any]:
    """Whole seconds from start to end, in the engine's own date arithmetic."""
    if dialect_of(session) == "postgresql":
        return func.round(extract("epoch", end - start))
    return func.round((func.julianday(end) - func.julianday(start)) * 86400)


def days_taken(session: Session) -> ColumnElement[Any]:
    """Whole days a recovery took (`seconds_between` floored; -1 when paid before it opened):
    the median's histogram buckets (`rollups.median_days`)."""
    seconds = seconds_between(session, RecoveryCase.opened_at, RecoveryCase.closed_at)
    if dialect_of(session) == "postgresql":
        whole = cast(func.floor(seconds / 86400), Integer)
    else:  # round() gives a float; CAST truncates, which is floor for a non-negative one
        whole = cast(seconds / 86400, Integer)
    return case((seconds < 0, -1), else_=whole)


def median_days(session: Session, cohort: ColumnElement[bool]) -> float | None:
    """The median found by the database (window functions work on SQLite >= 3.25 and
    PostgreSQL), so only the one or two middle values come back, however many cases."""
    seconds = seconds_between(session, RecoveryCase.opened_at, RecoveryCase.closed_at)
    ranked = (
        select(
            seconds.label("s"),
            func.row_number().over(order_by=seconds).label("rn"),
            func.count().over().label("n"),
        )
        .where(cohort, RecoveryCase.status == CaseStatus.RECOVERED)
        .where(RecoveryCase.closed_at.is_not(None))
        .subquery()
    )
    middle = session.execute(
        select(ranked.c.s).where(ranked.c.rn.in_([(ranked.c.n + 1) // 2, (ranked.c.n + 2) // 2]))
    ).all()
    if not middle:
        return None
    values = [float(r[0]) for r in middle]
    return round(sum(values) / len(values) / 86400, 2)


def status_sums(session: Session, where: ColumnElement[bool]) -> list[tuple[Any, ...]]:
    """(currency, status, cases, amount due, amount collected) of the cases `where` selects."""
    rows = session.execute(
        select(
            RecoveryCase.currency,
            RecoveryCase.status,
            func.count(),
            func.coalesce(func.sum(RecoveryCase.amount_due), 0),
            func.coalesce(func.sum(RecoveryCase.amount_recovered), 0),
        )
        .where(where)
        .group_by(RecoveryCase.currency, RecoveryCase.status)
    ).all()
    return [tuple(r) for r in rows]
