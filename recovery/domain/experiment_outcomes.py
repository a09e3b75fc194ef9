"""Outcomes that hold up against billing (issue 11, item 5). Pure.

A cancel-flow save counts the day the offer is accepted, and a recovery the day the invoice is
paid; neither says the subscriber stayed. So each is checked again 30, 60 and 90 days later:

- *validated* (a save) or *durable* (a recovery) at N days: the subscription was not cancelled
  before day N (a cancellation counts from when it was asked for - Stripe's `canceled_at` -
  even if access runs to the period's end), and every invoice that fell due in those N days
  was paid within them. A voided invoice owed nothing (a pause that voids its invoices) and
  does not count against it.
- *pending*: day N has not come yet and nothing has failed so far. Pending is never counted as
  lost; it is shown apart.
- *not validated*: cancelled before day N, or an invoice due in the window unpaid at its end.
  A cancellation decides at once: a save cancelled on day 20 is not validated at 30 days from
  day 20 on.

An invoice falls due when Stripe creates it: a subscription's invoices are charged
automatically about an hour after creation (docs/stripe.md, invoice lifecycle), so its
`created` time stands for its due date.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

WINDOWS = (30, 60, 90)  # days after the save or recovery


class Held(StrEnum):
    HELD = "held"  # validated (a save) / durable (a recovery)
    NOT_HELD = "not_held"
    PENDING = "pending"


@dataclass(frozen=True)
class DueInvoice:
    due_at: datetime
    status: str | None  # Stripe's invoice status now
    paid_at: datetime | None


def held(
    start: datetime,
    days: int,
    now: datetime,
    cancelled_at: datetime | None,
    invoices: Iterable[DueInvoice],
) -> Held:
    """Whether the subscription saved or recovered at `start` held for `days` days."""
    end = start + timedelta(days=days)
    if cancelled_at is not None and cancelled_at < end:
        return Held.NOT_HELD
    if now < end:
        return Held.PENDING
    for invoice in invoices:
        if not start < invoice.due_at <= end or invoice.status == "void":
            continue
        paid = invoice.status == "paid" and (invoice.paid_at is None or invoice.paid_at <= end)
        if not paid:
            return Held.NOT_HELD
    return Held.HELD


@dataclass(frozen=True)
class HeldCounts:
    """Of some saves or recoveries, how many held at one window, failed, or are pending."""

    days: int
    held: int = 0
    not_held: int = 0
    pending: int = 0

    def add(self, outcome: Held) -> HeldCounts:
        return HeldCounts(
            self.days,
            self.held + (outcome is Held.HELD),
            self.not_held + (outcome is Held.NOT_HELD),
            self.pending + (outcome is Held.PENDING),
        )

    @property
    def decided(self) -> int:
        return self.held + self.not_held
