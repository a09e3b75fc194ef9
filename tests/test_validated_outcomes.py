"""Saves validated and recoveries durable at 30/60/90 days in the overview and
GET /api/v1/metrics (SQLite and PostgreSQL), from a known history."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from recovery.models import CancelSession, Invoice, RecoveryCase, Subscription
from recovery.runtime import Runtime
from recovery.services.reporting import metrics
from tests.conftest import API_KEY

T0 = datetime(2026, 7, 1, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=70)  # 30 and 60 days have passed for a save on T0; 90 not yet


def _save(n: int, sub: str, at: datetime) -> CancelSession:
    return CancelSession(
        id=f"cxs_{n}",
        token_hash=f"{n:064d}",
        source="api",
        customer_id=f"cus_{sub}",
        subscription_id=sub,
        return_url="https://example.com",
        variant="default",
        created_at=at,
        expires_at=at + timedelta(hours=1),
        decided_at=at,
        outcome="saved_by_discount",
        currency="usd",
        mrr_before=2900,
        mrr_after=2000,
    )


def _invoice(sub: str, n: int, due: datetime, status: str, paid_at: datetime | None) -> Invoice:
    return Invoice(
        id=f"in_{sub}_{n}",
        customer_id=f"cus_{sub}",
        subscription_id=sub,
        status=status,
        currency="usd",
        amount_due=2000,
        created=int(due.timestamp()),
        paid_at=paid_at,
    )


def _seed(rt: Runtime) -> None:
    with rt.db.transaction() as s:
        # sub_kept: every renewal paid; sub_day20: cancelled on day 20; sub_unpaid: the day-31
        # renewal never paid.
        s.add(Subscription(id="sub_kept", customer_id="cus_sub_kept", status="active"))
        s.add(
            Subscription(
                id="sub_day20",
                customer_id="cus_sub_day20",
                status="active",  # cancels at the period's end: still active today
                cancel_at_period_end=True,
                canceled_at=T0 + timedelta(days=20),
            )
        )
        s.add(Subscription(id="sub_unpaid", customer_id="cus_sub_unpaid", status="past_due"))
        for n, sub in enumerate(("sub_kept", "sub_day20", "sub_unpaid")):
            s.add(_save(n, sub, T0))
        s.add(_invoice("sub_kept", 1, T0 + timedelta(days=29), "paid", T0 + timedelta(days=29)))
        s.add(_invoice("sub_kept", 2, T0 + timedelta(days=59), "paid", T0 + timedelta(days=59)))
        s.add(_invoice("sub_unpaid", 1, T0 + timedelta(days=29), "paid", T0 + timedelta(days=29)))
        s.add(_invoice("sub_unpaid", 2, T0 + timedelta(days=50), "open", None))
        # A recovery paid on day 0 whose subscription goes on paying.
        s.add(
            RecoveryCase(
                invoice_id="in_failed",
                customer_id="cus_sub_kept",
                subscription_id="sub_kept",
                status="recovered",
                currency="usd",
                amount_due=2000,
                amount_recovered=2000,
                opened_at=T0 - timedelta(days=2),
                closed_at=T0,
            )
        )


def test_the_overview_counts_saves_and_recoveries_that_held(runtime: Runtime) -> None:
    _seed(runtime)
    start, end = metrics.period_of(date(2026, 6, 1), date(2026, 7, 31))
    with runtime.db.reading() as s:
        o = metrics.compute_overview(s, start, end, "usd", NOW)
    saves = {c.days: (c.held, c.not_held, c.pending) for c in o.validated.saves}
    # 30 days: kept and unpaid held (the day-50 invoice is outside), day20 did not.
    # 60 days: kept only (unpaid's day-50 invoice was not paid by day 60). 90 days: day20 has
    # failed already; kept and unpaid are pending (the day-50 invoice may yet be paid in time).
    assert saves == {30: (2, 1, 0), 60: (1, 2, 0), 90: (0, 1, 2)}
    recoveries = {c.days: (c.held, c.not_held, c.pending) for c in o.validated.recoveries}
    assert recoveries == {30: (1, 0, 0), 60: (1, 0, 0), 90: (0, 0, 1)}


def test_the_api_shows_them_beside_the_raw_figures(runtime: Runtime, client: Any) -> None:
    _seed(runtime)
    runtime.clock.set(NOW)  # type: ignore[attr-defined]
    body = client.get(
        "/api/v1/metrics?from=2026-06-01&to=2026-07-31&currency=usd",
        headers={"Authorization": f"Bearer {API_KEY}"},
    ).get_json()
    assert body["cancel_flow"]["saved"] == 2  # the raw figure: day20's save is reversed
    assert body["validated"]["saves"][0] == {"days": 30, "held": 2, "not_held": 1, "pending": 0}
    assert "Pending" in body["definitions"]["validated"]


def test_the_overview_page_shows_them(runtime: Runtime, client: Any) -> None:
    from tests.support.dashboard import add_user, login

    _seed(runtime)
    runtime.clock.set(NOW)  # type: ignore[attr-defined]
    add_user(runtime, "viewer@example.com", "viewer")
    login(client, "viewer@example.com")
    html = client.get(
        "/dashboard?period=custom&from=2026-06-01&to=2026-07-31&currency=usd"
    ).get_data(as_text=True)
    assert "Held up against billing" in html
    assert "Saves validated" in html and "2 of 3" in html and "1 pending" in html
