"""Migration 0022's figures: the recovered monthly revenue counts a subscription once per
period from each row's previous recovery (`recovered_prices.prev_opened_at`, kept by
triggers), and the case sums per day and status (`case_status_day_rollups`) - equal to the
direct computation on SQLite and PostgreSQL, as the triggers keep them and as the migration
fills them in place."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from alembic import command
from sqlalchemy import func, select

from recovery.migrate import alembic_config, upgrade
from recovery.models import CaseDayRollup
from recovery.models.rollups import CaseStatusDayRollup, RecoveredPrice
from recovery.runtime import Runtime
from recovery.services.reporting import metrics
from recovery.services.reporting.metrics.rollup_refresh import refresh
from tests.test_overview_rollups import _apply, _both

OPENED = datetime(2026, 10, 5, 10, tzinfo=UTC)
NOW = datetime(2026, 11, 2, 9, tzinfo=UTC)


def _mrr(rt: Runtime, first: date, last: date) -> int:
    start, end = metrics.period_of(first, last)
    rolled, direct = _both(rt, start, end, "usd", NOW)
    assert rolled == direct
    return int(rolled.recovered_monthly_revenue)


def _previous(rt: Runtime) -> dict[int, datetime | None]:
    with rt.db.reading() as s:
        return dict(s.execute(select(RecoveredPrice.case_id, RecoveredPrice.prev_opened_at)).all())


def _history(rt: Runtime) -> None:
    """sub_0 recovered on Oct 5, 14 and 20 (29.00 a month), sub_1 on Oct 5 (9.00)."""
    serial = [0]
    for step in (
        ("items", "sub_0", [(2900, 1, "month")]),
        ("items", "sub_1", [(900, 1, "month")]),
        ("open", OPENED, "usd", "sub_0", 2900, "soft", "visa"),
        ("open", OPENED + timedelta(days=9), "usd", "sub_0", 2900, "soft", "visa"),
        ("open", OPENED + timedelta(days=15), "usd", "sub_0", 2900, "soft", "visa"),
        ("open", OPENED, "usd", "sub_1", 900, "soft", "visa"),
        *(("recover", i, 30, "our_retry") for i in range(4)),
    ):
        _apply(rt, step, serial)


def test_a_subscription_counts_once_in_any_period_from_its_previous_recovery(
    runtime: Runtime,
) -> None:
    _history(runtime)
    with runtime.db.reading() as s:
        ids = list(s.scalars(select(RecoveredPrice.case_id).order_by(RecoveredPrice.case_id)))
    assert _previous(runtime) == {
        ids[0]: None,
        ids[1]: OPENED,
        ids[2]: OPENED + timedelta(days=9),
        ids[3]: None,
    }
    assert _mrr(runtime, date(2026, 10, 1), date(2026, 10, 31)) == 2900 + 900
    # a period starting after sub_0's first recovery: its second is the period's first
    assert _mrr(runtime, date(2026, 10, 10), date(2026, 10, 31)) == 2900
    assert _mrr(runtime, date(2026, 10, 21), date(2026, 10, 31)) == 0
    refresh(runtime)
    assert _mrr(runtime, date(2026, 10, 10), date(2026, 10, 31)) == 2900
    # the middle recovery reopened: the last one's previous is now the first
    _apply(runtime, ("reopen", 1), [100])
    assert _previous(runtime)[ids[2]] == OPENED
    assert _mrr(runtime, date(2026, 10, 10), date(2026, 10, 31)) == 2900
    # a new price replaces the rows (the mirror's items): numbered again, counted once
    _apply(runtime, ("items", "sub_0", [(4900, 1, "month")]), [101])
    assert _previous(runtime)[ids[2]] == OPENED
    assert _mrr(runtime, date(2026, 10, 1), date(2026, 10, 31)) == 4900 + 900


def _status_sums(rt: Runtime) -> tuple[list[Any], list[Any]]:
    """CaseStatusDayRollup's rows, and CaseDayRollup's summed the same way."""
    sums = ("cases", "amount_due", "amount_recovered", "recovered_30", "recovered_60")
    keys = ("day", "currency", "status")
    with rt.db.reading() as s:
        kept = s.execute(
            select(
                *(getattr(CaseStatusDayRollup, k) for k in keys),
                *(getattr(CaseStatusDayRollup, k) for k in (*sums, "recovered_90")),
            ).order_by(*(getattr(CaseStatusDayRollup, k) for k in keys))
        ).all()
        summed = s.execute(
            select(
                *(getattr(CaseDayRollup, k) for k in keys),
                *(func.sum(getattr(CaseDayRollup, k)) for k in (*sums, "recovered_90")),
            )
            .group_by(*(getattr(CaseDayRollup, k) for k in keys))
            .order_by(*(getattr(CaseDayRollup, k) for k in keys))
        ).all()
    return [tuple(r) for r in kept], [tuple(r) for r in summed]


def test_migration_0022_fills_the_previous_recoveries_and_the_status_sums_in_place(
    runtime: Runtime, database_url: str
) -> None:
    _history(runtime)
    _apply(runtime, ("lose", 3, "lost"), [200])
    refresh(runtime)
    before = _previous(runtime)
    kept, summed = _status_sums(runtime)
    assert kept == summed and len(kept) == 4  # Oct 5 recovered and lost, Oct 14, Oct 20
    runtime.db.dispose()
    config = alembic_config(database_url)
    command.downgrade(config, "0021")
    upgrade(database_url)
    assert _previous(runtime) == before
    assert _status_sums(runtime) == (kept, summed)
    assert _mrr(runtime, date(2026, 10, 10), date(2026, 10, 31)) == 2900
