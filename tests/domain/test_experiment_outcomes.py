"""Saves validated and recoveries durable at 30/60/90 days: the rule, by hand-worked cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from recovery.domain.experiment_outcomes import DueInvoice, Held, HeldCounts, held

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def paid(due: float, at: float | None = None) -> DueInvoice:
    return DueInvoice(day(due), "paid", day(at if at is not None else due))


def test_a_save_cancelled_on_day_20_is_not_validated_at_30_days_from_day_20_on() -> None:
    assert held(T0, 30, day(21), day(20), []) is Held.NOT_HELD
    assert held(T0, 30, day(95), day(20), []) is Held.NOT_HELD
    assert held(T0, 90, day(95), day(20), []) is Held.NOT_HELD


def test_a_cancellation_after_the_window_leaves_it_validated() -> None:
    assert held(T0, 30, day(40), day(35), [paid(29)]) is Held.HELD
    assert held(T0, 60, day(40), day(35), [paid(29)]) is Held.NOT_HELD


def test_an_open_window_is_pending_not_lost() -> None:
    unpaid = DueInvoice(day(29), "open", None)
    assert held(T0, 30, day(29.5), None, [unpaid]) is Held.PENDING
    assert held(T0, 60, day(45), None, [paid(29)]) is Held.PENDING


def test_every_invoice_due_in_the_window_must_be_paid_in_it() -> None:
    assert held(T0, 30, day(31), None, [DueInvoice(day(29), "open", None)]) is Held.NOT_HELD
    assert held(T0, 30, day(31), None, [DueInvoice(day(29), "uncollectible", None)]) is (
        Held.NOT_HELD
    )
    assert held(T0, 30, day(40), None, [paid(29, at=32)]) is Held.NOT_HELD  # paid too late
    assert held(T0, 60, day(61), None, [paid(29, at=32)]) is Held.HELD
    assert held(T0, 30, day(31), None, [paid(5), paid(29)]) is Held.HELD


def test_a_voided_invoice_owed_nothing_and_invoices_outside_the_window_do_not_count() -> None:
    voided = DueInvoice(day(10), "void", None)
    before = DueInvoice(day(-3), "open", None)  # the failed invoice a recovery paid
    after = DueInvoice(day(31), "open", None)
    assert held(T0, 30, day(31), None, [voided, before, after]) is Held.HELD


def test_counts_keep_pending_apart() -> None:
    counts = HeldCounts(30)
    for outcome in (Held.HELD, Held.HELD, Held.NOT_HELD, Held.PENDING):
        counts = counts.add(outcome)
    assert (counts.held, counts.not_held, counts.pending, counts.decided) == (2, 1, 1, 3)
