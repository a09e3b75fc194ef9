"""The overview: every figure for one currency and one period, in a fixed handful of queries
whatever the number of cases. One code path for the dashboard page and GET /api/v1/metrics."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from recovery.domain.cases import ACTIVE, CaseStatus
from recovery.models import RecoveryCase
from recovery.runtime import Runtime
from recovery.services.reporting.metrics.by_month import by_month
from recovery.services.reporting.metrics.cancel_flow import cancel_flow
from recovery.services.reporting.metrics.cohort import (
    LOST_STATUSES,
    cohort_figures,
    cohort_of,
    median_days,
    recovered_mrr,
    recovered_mrr_by_currency,
)
from recovery.services.reporting.metrics.expiring_cards import expiring_cards
from recovery.services.reporting.metrics.outreach import outreach, pauses_by_currency
from recovery.services.reporting.metrics.parameters import currencies_in_use, default_currency
from recovery.services.reporting.metrics.reminder_channels import reminder_channels
from recovery.services.reporting.metrics.result import (
    CurrencySummary,
    Overview,
    Tally,
    exponent_of,
    share,
)
from recovery.services.reporting.metrics.validated import validated
from recovery.services.reporting.metrics.weekly import weekly


def compute_overview(
    session: Session, period_from: datetime, period_to: datetime, currency: str, now: datetime
) -> Overview:
    """Every number of the overview; a fixed handful of queries whatever the number of cases."""
    currency = currency.lower()
    cohort = cohort_of(currency, period_from, period_to)
    tiles = cohort_figures(session, cohort)
    return Overview(
        period_from=period_from,
        period_to=period_to,
        currency=currency,
        exponent=exponent_of(currency),
        failed=tiles.failed,
        recovered=tiles.recovered,
        recovered_share=tiles.recovered_share,
        in_progress=tiles.in_progress,
        lost=tiles.lost,
        lost_reasons=tiles.lost_reasons,
        recovered_monthly_revenue=recovered_mrr(session, cohort),
        median_days_to_recover=median_days(session, cohort),
        by_decline_category=tiles.by_decline_category,
        by_card_brand=tiles.by_card_brand,
        by_trigger=tiles.by_trigger,
        by_reminder_channel=reminder_channels(session, cohort, tiles.customer_made),
        weekly=weekly(session, cohort, period_from, period_to),
        expiring_cards=expiring_cards(session, currency, period_from, period_to, now),
        cancel_flow=cancel_flow(session, currency, period_from, period_to),
        generated_at=now,
        outreach=outreach(session, currency, period_from, period_to),
        by_month=by_month(session, currency, now),
        by_currency=by_currency(session, period_from, period_to),
        validated=validated(session, currency, period_from, period_to, now),
    )


def _tally(by_status: dict[str, list[int]], statuses: Iterable[str], column: int = 1) -> Tally:
    """Count and amount (amount due; `column` 2: collected) over some statuses."""
    picked = [by_status[s] for s in statuses if s in by_status]
    return Tally(sum(p[0] for p in picked), sum(p[column] for p in picked))


def by_currency(
    session: Session, period_from: datetime, period_to: datetime
) -> tuple[CurrencySummary, ...]:
    """The period's headline figures in every currency that has cases in it, most failed
    first: three statements whatever the number of currencies (one GROUP BY currency and
    status, one for the recovered subscriptions' monthly revenue, one for the pauses instead of
    losses), with the tiles' definitions."""
    in_period = and_(RecoveryCase.opened_at >= period_from, RecoveryCase.opened_at < period_to)
    rows = session.execute(
        select(
            RecoveryCase.currency,
            RecoveryCase.status,
            func.count(),
            func.coalesce(func.sum(RecoveryCase.amount_due), 0),
            func.coalesce(func.sum(RecoveryCase.amount_recovered), 0),
        )
        .where(in_period)
        .group_by(RecoveryCase.currency, RecoveryCase.status)
    ).all()
    sums: dict[str, dict[str, list[int]]] = {}
    for currency, status, n, due, collected in rows:
        slot = sums.setdefault(str(currency).lower(), {})
        slot[str(status)] = [int(n), int(due), int(collected)]
    mrr = recovered_mrr_by_currency(session, in_period)
    pauses = pauses_by_currency(session, period_from, period_to)
    for currency in pauses:  # paused in the period, from cases opened before it
        sums.setdefault(currency, {})
    active = {s.value for s in ACTIVE}
    out = []
    for currency, by_status in sums.items():
        failed = _tally(by_status, by_status)
        recovered = _tally(by_status, [CaseStatus.RECOVERED.value], column=2)
        out.append(
            CurrencySummary(
                currency=currency,
                failed=failed,
                recovered=recovered,
                recovered_share=share(recovered.amount, failed.amount),
                in_progress=_tally(by_status, active),
                lost=_tally(by_status, LOST_STATUSES),
                recovered_monthly_revenue=mrr.get(currency, 0),
                pauses=pauses.get(currency, (0, 0))[0],
                pauses_resumed=pauses.get(currency, (0, 0))[1],
            )
        )
    out.sort(key=lambda c: (-c.failed.count, c.currency))
    return tuple(out)


def overview(
    rt: Runtime, period_from: datetime, period_to: datetime, currency: str | None, now: datetime
) -> Overview:
    """The overview, read in one transaction; without a currency, the most used one."""
    with rt.db.reading() as session:
        currency = currency or default_currency(session)
        return compute_overview(session, period_from, period_to, currency, now)


def currencies(rt: Runtime) -> list[str]:
    """Currencies that have cases, most used first (the page's currency picker)."""
    with rt.db.reading() as session:
        return currencies_in_use(session)
