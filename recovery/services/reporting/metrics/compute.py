"""The overview: every figure for one currency and one period, in a fixed handful of queries
whatever the number of cases. One code path for the dashboard page and GET /api/v1/metrics."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from recovery.runtime import Runtime
from recovery.services.reporting.metrics.by_month import by_month
from recovery.services.reporting.metrics.cancel_flow import cancel_flow
from recovery.services.reporting.metrics.cohort import (
    cohort_figures,
    cohort_of,
    median_days,
    recovered_mrr,
)
from recovery.services.reporting.metrics.expiring_cards import expiring_cards
from recovery.services.reporting.metrics.parameters import currencies_in_use, default_currency
from recovery.services.reporting.metrics.reminder_channels import reminder_channels
from recovery.services.reporting.metrics.result import CurrencySummary, Overview, exponent_of
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
        by_month=by_month(session, currency, now),
        by_currency=by_currency(session, period_from, period_to),
    )


def by_currency(
    session: Session, period_from: datetime, period_to: datetime
) -> tuple[CurrencySummary, ...]:
    """The period's headline figures in each currency that has cases (most used first): two
    queries per currency, and businesses bill in a handful."""
    out = []
    for currency in currencies_in_use(session):
        cohort = cohort_of(currency, period_from, period_to)
        tiles = cohort_figures(session, cohort)
        out.append(
            CurrencySummary(
                currency=currency,
                failed=tiles.failed,
                recovered=tiles.recovered,
                recovered_share=tiles.recovered_share,
                in_progress=tiles.in_progress,
                lost=tiles.lost,
                recovered_monthly_revenue=recovered_mrr(session, cohort),
            )
        )
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
