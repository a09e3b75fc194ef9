"""When a save stopped being one: a subscriber who accepted an offer in the cancel flow and
cancelled afterwards was not kept, and every figure, list and export says so.

A save (a session whose outcome is `saved_by_*`) is *reversed* at the first of:
- a later cancel-flow session for the same subscription that ended in `cancelled` (its
  `decided_at`); a cancel in the same session needs no rule: it replaces the session's outcome;
- a cancellation in Stripe after the save (the mirrored subscription's `canceled_at`, which
  Stripe sets when a cancellation is requested, at once or at the period's end; else its
  `ended_at`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.orm import aliased

from recovery.models import CancelSession, Subscription
from recovery.models.cancel_flow import Outcome

SAVED_OUTCOMES = (
    Outcome.SAVED_BY_PAUSE.value,
    Outcome.SAVED_BY_DOWNGRADE.value,
    Outcome.SAVED_BY_LONGER_TERM.value,
    Outcome.SAVED_BY_DISCOUNT.value,
)
REVERSED = "save_reversed"  # a save a later cancel superseded: the list's filter and label


def cancelled_in_flow_after(row: Any = CancelSession) -> ColumnElement[Any]:
    """When a later cancel-flow session cancelled `row`'s subscription (NULL: none did)."""
    later = aliased(CancelSession)
    return (
        select(func.min(later.decided_at))
        .where(later.subscription_id == row.subscription_id)
        .where(later.outcome == Outcome.CANCELLED.value)
        .where(later.decided_at > row.decided_at)
        .scalar_subquery()
    )


def cancelled_in_stripe_after(row: Any = CancelSession) -> ColumnElement[Any]:
    """When Stripe cancelled `row`'s subscription after `row` was decided (NULL: not since)."""
    cancelled = func.coalesce(Subscription.canceled_at, Subscription.ended_at)
    return (
        select(cancelled)
        .where(Subscription.id == row.subscription_id)
        .where(cancelled > row.decided_at)
        .scalar_subquery()
    )


def is_reversed(row: Any = CancelSession) -> ColumnElement[bool]:
    """True for a save that a later cancel superseded (SQL, one row at a time)."""
    return and_(
        row.outcome.in_(SAVED_OUTCOMES),
        func.coalesce(cancelled_in_flow_after(row), cancelled_in_stripe_after(row)).is_not(None),
    )


def reversed_at(outcome: str | None, *candidates: datetime | None) -> datetime | None:
    """The first of the later cancels, for a save; None for anything else or no cancel."""
    if outcome not in SAVED_OUTCOMES:
        return None
    found = [c for c in candidates if c is not None]
    return min(found) if found else None
