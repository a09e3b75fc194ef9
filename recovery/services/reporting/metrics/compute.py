"""The overview: every figure for one currency and one period, in a fixed handful of queries
whatever the number of cases. One code path for the dashboard page and GET /api/v1/metrics:
`compute_overview` reads the sums from the rollups (`rollups`), `compute_overview_direct` from
the source tables alone - the reference the rollups are tested against."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, text
from sqlalchemy.orm import Session

from recovery.domain.cases import ACTIVE, CaseStatus
from recovery.models import RecoveryCase
from recovery.runtime import Runtime
from recovery.services.reporting.metrics import held_rollups, rollups
from recovery.services.reporting.metrics.by_month import by_month, months_of
from recovery.services.reporting.metrics.cancel_flow import (
    cancel_flow,
    recent_answers,
    stats_of,
)
from recovery.services.reporting.metrics.cancel_flow import in_period as sessions_in
from recovery.services.reporting.metrics.cohort import (
    LOST_STATUSES,
    CohortFigures,
    cohort_figures,
    cohort_of,
    figures_of,
    median_days,
    recovered_mrr,
    recovered_mrr_by_currency,
    status_sums,
)
from recovery.services.reporting.metrics.expiring_cards import (
    expiring_cards,
    expiring_cards_kept,
)
from recovery.services.reporting.metrics.outreach import outreach, pauses_by_currency
from recovery.services.reporting.metrics.parameters import by_use, most_used
from recovery.services.reporting.metrics.reminder_channels import channels_of, reminder_channels
from recovery.services.reporting.metrics.result import (
    CancelFlowStats,
    CurrencySummary,
    ExpiringCards,
    Keyed,
    MonthRecovery,
    Overview,
    Tally,
    Week,
    exponent_of,
    share,
)
from recovery.services.reporting.metrics.validated import Validated, validated
from recovery.services.reporting.metrics.weekly import weekly, weeks_of


def compute_overview(
    session: Session, period_from: datetime, period_to: datetime, currency: str, now: datetime
) -> Overview:
    """Every number of the overview: the additive figures from the rollups (clean days) and
    the source tables (the rest, `rollups.plan`), the others directly; equal to
    `compute_overview_direct` (tests/test_overview_rollups.py)."""
    currency = currency.lower()
    dirty = rollups.dirty_days(session)
    p = rollups.plan(dirty.get(currency, set()), period_from, period_to)
    tiles = figures_of(rollups.case_groups(session, currency, p))
    # the tile's figure among them
    mrr = rollups.recovered_mrr_by_currency(session, period_from, period_to)
    summaries = summaries_of(
        rollups.status_sums(session, dirty, period_from, period_to),
        _lowered(mrr),
        pauses_by_currency(session, period_from, period_to),
    )
    return _overview(
        session,
        currency,
        period_from,
        period_to,
        now,
        tiles=tiles,
        channels=channels_of(rollups.channel_rows(session, currency, p), tiles.customer_made),
        mrr=mrr.get(currency, 0),
        weeks=weeks_of(rollups.daily_cases(session, currency, p), period_from, period_to),
        cancel=stats_of(
            rollups.session_groups(session, currency, p),
            recent_answers(session, sessions_in(currency, period_from, period_to)),
        ),
        months=months_of(
            rollups.monthly_cases(session, currency, dirty.get(currency, set()), now), now
        ),
        summaries=summaries,
        held=held_rollups.held_counts(session, currency, p, now),
        cards=expiring_cards_kept(session, currency, period_from, period_to, now),
        median=rollups.median_days(session, currency, p, period_from, period_to),
    )


def compute_overview_direct(
    session: Session, period_from: datetime, period_to: datetime, currency: str, now: datetime
) -> Overview:
    """Every number of the overview from the source tables alone (the reference the rollups
    are held to); a fixed handful of queries whatever the number of cases."""
    currency = currency.lower()
    cohort = cohort_of(currency, period_from, period_to)
    tiles = cohort_figures(session, cohort)
    return _overview(
        session,
        currency,
        period_from,
        period_to,
        now,
        tiles=tiles,
        channels=reminder_channels(session, cohort, tiles.customer_made),
        mrr=recovered_mrr(session, cohort),
        weeks=weekly(session, cohort, period_from, period_to),
        cancel=cancel_flow(session, currency, period_from, period_to),
        months=by_month(session, currency, now),
        summaries=by_currency(session, period_from, period_to),
        held=validated(session, currency, period_from, period_to, now),
        cards=expiring_cards(session, currency, period_from, period_to, now),
        median=median_days(session, cohort),
    )


def _overview(
    session: Session,
    currency: str,
    period_from: datetime,
    period_to: datetime,
    now: datetime,
    *,
    tiles: CohortFigures,
    channels: tuple[Keyed, ...],
    mrr: int,
    weeks: tuple[Week, ...],
    cancel: CancelFlowStats,
    months: tuple[MonthRecovery, ...],
    summaries: tuple[CurrencySummary, ...],
    held: Validated,
    cards: ExpiringCards,
    median: float | None,
) -> Overview:
    """The overview from its additive parts, however summed, and the figures read directly
    and the ones that are not sums (distinct subscriptions, a median, now's cards), as each
    path reads them."""
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
        recovered_monthly_revenue=mrr,
        median_days_to_recover=median,
        by_decline_category=tiles.by_decline_category,
        by_card_brand=tiles.by_card_brand,
        by_trigger=tiles.by_trigger,
        by_reminder_channel=channels,
        weekly=weeks,
        expiring_cards=cards,
        cancel_flow=cancel,
        generated_at=now,
        outreach=outreach(session, currency, period_from, period_to),
        by_month=months,
        by_currency=summaries,
        validated=held,
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
    return by_currency_of(status_sums(session, in_period), session, period_from, period_to)


def by_currency_of(
    rows: Iterable[Sequence[Any]], session: Session, period_from: datetime, period_to: datetime
) -> tuple[CurrencySummary, ...]:
    """The side-by-side summaries from (currency, status) sums, with the figures that are not
    sums: the recovered subscriptions' monthly revenue, the pauses."""
    in_period = and_(RecoveryCase.opened_at >= period_from, RecoveryCase.opened_at < period_to)
    return summaries_of(
        rows,
        _lowered(recovered_mrr_by_currency(session, in_period)),
        pauses_by_currency(session, period_from, period_to),
    )


def _lowered(by_currency: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for currency, amount in by_currency.items():
        out[currency.lower()] = out.get(currency.lower(), 0) + amount
    return out


def summaries_of(
    rows: Iterable[Sequence[Any]], mrr: dict[str, int], pauses: dict[str, tuple[int, int]]
) -> tuple[CurrencySummary, ...]:
    sums: dict[str, dict[str, list[int]]] = {}
    for currency, status, n, due, collected in rows:
        slot = sums.setdefault(str(currency).lower(), {}).setdefault(str(status), [0, 0, 0])
        slot[0] += int(n)
        slot[1] += int(due)
        slot[2] += int(collected)
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
        if rt.db.is_postgres:
            # Its statements take milliseconds, but the planner's estimate for the expiring
            # cards' join crosses jit_above_cost, and compiling it took 200 ms of a 280 ms
            # statement at 1M invoices (bench/dashboard_scale.py --explain). For this read only.
            session.execute(text("SET LOCAL jit = off"))
            # psycopg prepares a statement run 5 times on a connection, and PostgreSQL may
            # then plan it once for any period: a generic plan that cannot see how narrow
            # a day's or an hour's range is (the windows ending this hour: 65 ms generic,
            # 0.5 ms planned for the values, bench/dashboard_scale.py). Planning is ~1 ms.
            session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
        if not currency:
            currency = most_used(*rollups.use_counts(session, rollups.dirty_days(session)))
        return compute_overview(session, period_from, period_to, currency, now)


def currencies(rt: Runtime) -> list[str]:
    """Currencies that have cases, most used first (the page's currency picker): from the
    rollups (`parameters.currencies_in_use` counts them in the cases table)."""
    with rt.db.reading() as session:
        return by_use(rollups.use_counts(session, rollups.dirty_days(session))[0])
