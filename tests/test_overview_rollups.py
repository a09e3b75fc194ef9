"""The overview from the rollups equals the direct computation (the reference), exactly, on
SQLite and PostgreSQL: for random histories - cases opened, recovered, lost, reopened across
days and currencies; cancel sessions saved, then cancelled in a later session or in Stripe;
renewals paid or not; changes to old days arriving after a refresh - with the worker's refresh
run at random points between them. And a change shows at once (its day is dirty), then from
the refreshed rollups."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select

from recovery.models import (
    CancelDayRollup,
    CancelSession,
    CaseDayRollup,
    ChannelDayRollup,
    HeldDayRollup,
    Invoice,
    OutboxMessage,
    OverviewDirtyDay,
    RecoveryCase,
    Subscription,
    SubscriptionItem,
)
from recovery.models.rollups import CaseStatusDayRollup, CurrencyDayRollup, RecoveredPrice
from recovery.runtime import Runtime
from recovery.services.reporting import metrics
from recovery.services.reporting.metrics import parameters, rollups
from recovery.services.reporting.metrics.compute import compute_overview_direct
from recovery.services.reporting.metrics.rollup_refresh import refresh

BASE = datetime(2026, 8, 1, tzinfo=UTC)
SUBS = [f"sub_{i}" for i in range(4)]
CURRENCIES = ("usd", "eur")
SAVED = ("saved_by_discount", "saved_by_pause")
TABLES = (
    RecoveredPrice,
    CurrencyDayRollup,
    SubscriptionItem,
    ChannelDayRollup,
    OutboxMessage,
    HeldDayRollup,
    CancelDayRollup,
    CaseDayRollup,
    CaseStatusDayRollup,
    OverviewDirtyDay,
    Invoice,
    CancelSession,
    RecoveryCase,
    Subscription,
)

instant = st.builds(
    lambda d, m: BASE + timedelta(days=d, minutes=m),
    st.integers(0, 75),
    st.integers(0, 24 * 60 - 1),
)
op = st.one_of(
    st.tuples(st.just("open"), instant, st.sampled_from(CURRENCIES), st.sampled_from(SUBS),
              st.integers(100, 5000), st.sampled_from(["soft", "needs_new_card", None]),
              st.sampled_from(["visa", "amex", None])),
    st.tuples(st.just("recover"), st.integers(0, 30), st.integers(0, 40 * 24),
              st.sampled_from(["our_retry", "card_update_link", "stripe_retry"])),
    st.tuples(st.just("lose"), st.integers(0, 30), st.sampled_from(["lost", "closed"])),
    st.tuples(st.just("reopen"), st.integers(0, 30)),
    st.tuples(st.just("session"), instant, st.sampled_from(CURRENCIES), st.sampled_from(SUBS),
              st.sampled_from([*SAVED, "cancelled", "abandoned", None]),
              st.integers(0, 3 * 24), st.sampled_from(["price", None])),
    st.tuples(st.just("cancel_sub"), st.sampled_from(SUBS), instant),
    st.tuples(st.just("invoice"), st.sampled_from(SUBS), instant,
              st.sampled_from(["paid", "open", "void"]), st.integers(0, 20 * 24)),
    st.tuples(st.just("message"), st.integers(0, 30), st.sampled_from(["email", "sms"]),
              st.sampled_from(["sent", "failed"]), st.integers(-24, 10 * 24)),
    st.tuples(st.just("items"), st.sampled_from(SUBS),
              st.lists(st.tuples(st.integers(0, 5000), st.integers(1, 3),
                                 st.sampled_from(["month", "year", None])), max_size=2)),
    st.tuples(st.just("refresh")),
)  # fmt: skip


def _apply(rt: Runtime, step: tuple[Any, ...], serial: list[int]) -> None:
    kind = step[0]
    if kind == "refresh":
        refresh(rt)
        return
    serial[0] += 1
    n = serial[0]
    with rt.db.transaction() as s:
        cases = s.scalars(select(RecoveryCase).order_by(RecoveryCase.id)).all()
        if kind == "open":
            _, at, currency, sub, amount, category, brand = step
            s.add(
                RecoveryCase(
                    invoice_id=f"in_f{n}",
                    customer_id=f"cus_{sub}",
                    subscription_id=sub,
                    status="retrying",
                    currency=currency,
                    amount_due=amount,
                    decline_category=category,
                    card_brand=brand,
                    opened_at=at,
                )
            )
        elif kind in ("recover", "lose", "reopen") and cases:
            case = cases[step[1] % len(cases)]
            if kind == "recover":
                case.status, case.recovered_via = "recovered", step[3]
                case.amount_recovered = case.amount_due
                case.closed_at = case.opened_at + timedelta(hours=step[2])
            elif kind == "lose":
                case.status, case.closed_at = step[2], case.opened_at + timedelta(days=2)
                case.close_reason = "voided" if step[2] == "closed" else None
            else:
                case.status, case.closed_at, case.recovered_via = "retrying", None, None
                case.amount_recovered = 0
        elif kind == "message" and cases:
            _, index, channel, status, after = step
            case = cases[index % len(cases)]
            at = case.opened_at + timedelta(hours=after)
            s.add(
                OutboxMessage(
                    about=f"case:{case.id}",
                    case_id=case.id,
                    channel=channel,
                    template="reminder",
                    step="first",
                    locale="en",
                    recipient="someone@example.com",
                    body="Your payment did not go through.",
                    send_after=at,
                    dedupe_key=f"msg:{n}",
                    status=status,
                    created_at=at,
                    sent_at=at if status == "sent" else None,
                )
            )
        elif kind == "session":
            _, at, currency, sub, outcome, after, reason = step
            s.add(
                CancelSession(
                    id=f"cxs_{n}",
                    token_hash=f"{n:064d}",
                    source="api",
                    customer_id=f"cus_{sub}",
                    subscription_id=sub,
                    return_url="https://example.com",
                    variant="default",
                    created_at=at,
                    expires_at=at + timedelta(hours=1),
                    decided_at=at + timedelta(hours=after) if outcome else None,
                    outcome=outcome,
                    reason=reason,
                    currency=currency,
                    mrr_before=2900,
                    mrr_after=2000 if outcome in SAVED else None,
                )
            )
        elif kind == "cancel_sub":
            _, sub, at = step
            found = s.get(Subscription, sub)
            if found is None:
                s.add(Subscription(id=sub, customer_id=f"cus_{sub}", status="active"))
                s.flush()
                found = s.get(Subscription, sub)
            assert found is not None
            found.status, found.canceled_at = "canceled", at
        elif kind == "items":  # the mirror replaces a subscription's items wholesale
            _, sub, items = step
            if s.get(Subscription, sub) is None:
                s.add(Subscription(id=sub, customer_id=f"cus_{sub}", status="active"))
                s.flush()
            s.execute(delete(SubscriptionItem).where(SubscriptionItem.subscription_id == sub))
            for i, (amount, quantity, interval) in enumerate(items):
                s.add(
                    SubscriptionItem(
                        id=f"si_{n}_{i}",
                        subscription_id=sub,
                        unit_amount=amount,
                        quantity=quantity,
                        currency="usd",
                        interval=interval,
                        interval_count=1 + i,
                    )
                )
        elif kind == "invoice":
            _, sub, at, status, paid_after = step
            s.add(
                Invoice(
                    id=f"in_r{n}",
                    customer_id=f"cus_{sub}",
                    subscription_id=sub,
                    status=status,
                    currency="usd",
                    amount_due=2000,
                    created=int(at.timestamp()),
                    paid_at=at + timedelta(hours=paid_after) if status == "paid" else None,
                )
            )


def _both(rt: Runtime, start: datetime, end: datetime, currency: str, now: datetime) -> Any:
    with rt.db.reading() as s:
        # the currency picker's order and the default currency: rollups == source
        assert rollups.use_counts(s, rollups.dirty_days(s)) == parameters.use_counts(s)
        return (
            metrics.compute_overview(s, start, end, currency, now),
            compute_overview_direct(s, start, end, currency, now),
        )


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    history=st.lists(op, min_size=1, max_size=40),
    first=st.integers(0, 60),
    length=st.integers(0, 45),
    now_day=st.integers(30, 110),
    now_minute=st.integers(0, 24 * 60 - 1),
    currency=st.sampled_from(CURRENCIES),
)
def test_the_rollups_give_exactly_the_direct_figures(
    runtime: Runtime,
    history: list[tuple[Any, ...]],
    first: int,
    length: int,
    now_day: int,
    now_minute: int,
    currency: str,
) -> None:
    with runtime.db.transaction() as s:
        for model in TABLES:
            s.execute(delete(model))
    serial = [0]
    for step in history:
        _apply(runtime, step, serial)
    day = (BASE + timedelta(days=first)).date()
    start, end = metrics.period_of(day, day + timedelta(days=length))
    now = BASE + timedelta(days=now_day, minutes=now_minute)
    rolled, direct = _both(runtime, start, end, currency, now)
    assert rolled == direct
    refresh(runtime)  # everything rolled up: the same again
    rolled, direct = _both(runtime, start, end, currency, now)
    assert rolled == direct
    with runtime.db.reading() as s:
        assert s.scalar(select(func.count()).select_from(OverviewDirtyDay)) == 0


def test_a_change_shows_at_once_and_after_the_refresh(runtime: Runtime) -> None:
    opened = datetime(2026, 10, 5, 10, tzinfo=UTC)
    with runtime.db.transaction() as s:
        for i in range(3):
            s.add(
                RecoveryCase(
                    invoice_id=f"in_{i}",
                    subscription_id=f"sub_{i}",
                    status="retrying",
                    currency="usd",
                    amount_due=1000,
                    opened_at=opened + timedelta(days=i),
                )
            )
    assert refresh(runtime) == 3  # three days recomputed
    start, end = metrics.period_of(date(2026, 10, 1), date(2026, 10, 31))
    now = datetime(2026, 11, 2, 9, tzinfo=UTC)

    def recovered() -> tuple[int, int]:
        with runtime.db.reading() as s:
            o = metrics.compute_overview(s, start, end, "usd", now)
            dirty = s.scalar(select(func.count(func.distinct(OverviewDirtyDay.day)))) or 0
        return o.recovered.amount, dirty

    assert recovered() == (0, 0)
    with runtime.db.transaction() as s:  # a payment arrives for the first case
        case = s.scalars(select(RecoveryCase).where(RecoveryCase.invoice_id == "in_0")).one()
        case.status, case.amount_recovered = "recovered", 1000
        case.recovered_via, case.closed_at = "our_retry", opened + timedelta(days=3)
    assert recovered() == (1000, 1)  # at once: its day is dirty and read directly
    assert refresh(runtime) == 1
    assert recovered() == (1000, 0)  # from the rollups
    with runtime.db.reading() as s:
        rows = s.scalars(select(CaseDayRollup).where(CaseDayRollup.status == "recovered")).all()
    assert [(r.day, r.cases, r.amount_recovered) for r in rows] == [(opened.date(), 1, 1000)]


def test_a_window_ending_today_is_pending_until_its_hour(runtime: Runtime) -> None:
    """A recovery paid at 15:00 is durable at 30 days from 15:00 on day 30, not at 10:00 or
    14:59: the rollups keep that day's windows by the hour they end and read the ones ending in
    the current hour directly."""
    closed = datetime(2026, 9, 1, 15, tzinfo=UTC)
    with runtime.db.transaction() as s:
        s.add(Subscription(id="sub_1", customer_id="cus_1", status="active"))
        s.add(
            RecoveryCase(
                invoice_id="in_1",
                subscription_id="sub_1",
                status="recovered",
                recovered_via="our_retry",
                currency="usd",
                amount_due=1000,
                amount_recovered=1000,
                opened_at=closed - timedelta(days=1),
                closed_at=closed,
            )
        )
    refresh(runtime)
    start, end = metrics.period_of(date(2026, 8, 1), date(2026, 9, 30))
    ends = closed + timedelta(days=30)
    for hour, minute, expected in (
        (10, 0, (0, 0, 1)),  # an hour to come: pending, from the rollup by the hour
        (14, 59, (0, 0, 1)),
        (15, 0, (1, 0, 0)),  # this hour: read directly
        (15, 30, (1, 0, 0)),
        (16, 0, (1, 0, 0)),  # an hour gone by: its outcome, from the rollup
    ):
        now = ends.replace(hour=hour, minute=minute)
        rolled, direct = _both(runtime, start, end, "usd", now)
        thirty = rolled.validated.recoveries[0]
        assert (thirty.held, thirty.not_held, thirty.pending) == expected
        assert rolled == direct


def test_the_reminder_channel_before_a_payment_is_rolled_up(runtime: Runtime) -> None:
    """A customer who paid through the card-update link after an SMS and then an email counts
    under email, from the rollups as directly; a message sent later to a rolled-up day's case
    (a late write) shows at once."""
    opened = datetime(2026, 10, 5, 10, tzinfo=UTC)
    history: list[tuple[Any, ...]] = [
        ("open", opened, "usd", "sub_0", 1000, "soft", "visa"),
        ("message", 0, "sms", "sent", 1),
        ("message", 0, "email", "sent", 2),
        ("recover", 0, 3, "card_update_link"),
        ("refresh",),
    ]
    serial = [0]
    for step in history:
        _apply(runtime, step, serial)
    start, end = metrics.period_of(date(2026, 10, 1), date(2026, 10, 31))
    now = datetime(2026, 11, 2, 9, tzinfo=UTC)
    rolled, direct = _both(runtime, start, end, "usd", now)
    assert rolled == direct
    channels = {k.key: (k.count, k.amount) for k in rolled.by_reminder_channel}
    assert channels["email"] == (1, 1000) and channels["sms"] == (0, 0)
    with runtime.db.reading() as s:
        assert s.scalar(select(func.count()).select_from(ChannelDayRollup)) == 1
    _apply(runtime, ("message", 0, "sms", "sent", 2), serial)  # the same hour, a later id
    rolled, direct = _both(runtime, start, end, "usd", now)
    assert rolled == direct
    assert {k.key: k.count for k in rolled.by_reminder_channel}["sms"] == 1


def test_recovered_revenue_follows_the_current_price_and_counts_a_subscription_once(
    runtime: Runtime,
) -> None:
    """A subscription recovered twice in the period counts once, at the price its items have
    now: the mirror replacing its items moves the figure at once (the triggers' rows), a
    reopened case leaves it, and the rollup path equals the direct join every time."""
    opened = datetime(2026, 10, 5, 10, tzinfo=UTC)
    serial = [0]
    for step in (
        ("items", "sub_0", [(2900, 1, "month"), (12000, 1, "year")]),
        ("open", opened, "usd", "sub_0", 2900, "soft", "visa"),
        ("open", opened + timedelta(days=9), "usd", "sub_0", 2900, "soft", "visa"),
        ("open", opened, "usd", "sub_1", 900, "soft", "visa"),
        ("recover", 0, 30, "our_retry"),
        ("recover", 1, 30, "our_retry"),
        ("recover", 2, 30, "our_retry"),
        ("refresh",),
    ):
        _apply(runtime, step, serial)
    start, end = metrics.period_of(date(2026, 10, 1), date(2026, 10, 31))
    now = datetime(2026, 11, 2, 9, tzinfo=UTC)

    def mrr() -> int:
        rolled, direct = _both(runtime, start, end, "usd", now)
        assert rolled == direct
        assert rolled.by_currency[0].recovered_monthly_revenue == rolled.recovered_monthly_revenue
        return int(rolled.recovered_monthly_revenue)

    assert mrr() == 2900 + 12000 // 24  # once, not twice (a year every 2: 1/24 a month)
    _apply(runtime, ("items", "sub_0", [(4900, 2, "month")]), serial)  # a new plan
    _apply(runtime, ("items", "sub_1", [(900, 1, "month")]), serial)
    assert mrr() == 9800 + 900
    _apply(runtime, ("reopen", 0), serial)  # one of sub_0's two recoveries: still counted
    assert mrr() == 9800 + 900
    _apply(runtime, ("reopen", 1), serial)
    assert mrr() == 900


def test_the_median_reads_only_its_middle_day_and_equals_the_direct_one(runtime: Runtime) -> None:
    """Recoveries taking 1 hour, 2 days 3 hours, 2 days 20 hours and 5 days: the median is the
    mean of the middle two (2 days 11.5 hours = 2.48 days) from the rollups' histogram and the
    middle day's read, rolled up or dirty; a fifth makes it the middle one."""
    opened = datetime(2026, 10, 5, 10, tzinfo=UTC)
    serial = [0]
    steps: list[tuple[Any, ...]] = []
    for i, hours in enumerate((1, 51, 68, 120)):
        steps.append(("open", opened + timedelta(days=i), "usd", f"sub_{i}", 900, "soft", None))
        steps.append(("recover", i, hours, "our_retry"))
    for step in steps:
        _apply(runtime, step, serial)
    start, end = metrics.period_of(date(2026, 10, 1), date(2026, 10, 31))
    now = datetime(2026, 11, 2, 9, tzinfo=UTC)
    for refreshed in (False, True):
        if refreshed:
            refresh(runtime)
        rolled, direct = _both(runtime, start, end, "usd", now)
        assert rolled == direct
        assert rolled.median_days_to_recover == round(59.5 / 24, 2)
    _apply(runtime, ("open", opened, "usd", "sub_4", 900, "soft", None), serial)
    _apply(runtime, ("recover", 4, 60, "our_retry"), serial)
    rolled, direct = _both(runtime, start, end, "usd", now)
    assert rolled == direct and rolled.median_days_to_recover == 2.5
