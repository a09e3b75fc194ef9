"""What cancelling does to a subscription in the state it is really in - the facts every sentence
of the cancel pages and the confirmation email is built from. Pure.

A subscription is paid up, past due with an unpaid invoice, paused, in a free trial, already set
to end, or ended. "Ends at the end of the period you have paid for" is true only when paid up:
a past-due subscription's current period was never paid, so what happens then is the business's
rule `[cancel_flow] unpaid_invoice`:

- "void" (the default): the subscription ends now and its unpaid invoices are voided in Stripe -
  nothing is owed, nothing more is charged, no more reminders. A subscriber who leaves during
  dunning rarely pays afterwards, and an open invoice nobody collects only waits to be written
  off; voiding says so at once.
- "leave_open": the subscription ends now; the unpaid invoice stays open and is still owed
  (Stripe stops collecting it automatically when the subscription is cancelled,
  docs/stripe.md#retries-by-stripe), for the business to collect as it sees fit.
- "collect": the subscription runs to the end of its current period and collection goes on until
  then (retries and reminders), as if no cancel had been asked for; then it ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, get_args

__all__ = [
    "UNPAID_INVOICE_CHOICES",
    "CancelPlan",
    "Standing",
    "SubscriptionNow",
    "UnpaidInvoice",
    "plan_cancel",
    "standing_of",
]

UnpaidInvoice = Literal["void", "leave_open", "collect"]
UNPAID_INVOICE_CHOICES: tuple[str, ...] = get_args(UnpaidInvoice)


class Standing(StrEnum):
    PAID_UP = "paid_up"
    PAST_DUE = "past_due"  # an open invoice with money still owed
    PAUSED = "paused"  # collection paused (Stripe's pause_collection)
    TRIALING = "trialing"
    ENDING = "ending"  # already set to end (cancel_at_period_end or cancel_at)
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class SubscriptionNow:
    """The subscription as Stripe has it now, with its open invoices."""

    status: str
    period_end: datetime | None
    cancel_at_period_end: bool = False
    cancel_at: datetime | None = None
    ended_at: datetime | None = None
    trial_end: datetime | None = None
    paused: bool = False
    resumes_at: datetime | None = None
    unpaid_amount: int = 0  # minor units, over the open invoices below
    currency: str = "usd"
    unpaid_since: datetime | None = None  # when the oldest of them was due
    open_invoices: tuple[str, ...] = ()


def standing_of(sub: SubscriptionNow) -> Standing:
    if sub.status in ("canceled", "incomplete_expired") or sub.ended_at is not None:
        return Standing.ENDED
    if sub.cancel_at_period_end or sub.cancel_at is not None:
        return Standing.ENDING
    if sub.open_invoices and sub.unpaid_amount > 0:
        return Standing.PAST_DUE
    if sub.paused:
        return Standing.PAUSED
    if sub.status == "trialing":
        return Standing.TRIALING
    return Standing.PAID_UP


Unpaid = Literal["none", "void", "leave_open", "collect"]


@dataclass(frozen=True, slots=True)
class CancelPlan:
    """What a cancellation asked for now does, and what the subscriber is told.

    `ends_at`: when the subscription (and access) ends; `at_period_end`: cancel_at_period_end in
    Stripe rather than ending it now. `unpaid`: what happens to money still owed ("none": nothing
    is owed); `void_invoices`: the invoices the cancellation voids in Stripe."""

    standing: Standing
    at_period_end: bool
    ends_at: datetime
    unpaid: Unpaid = "none"
    unpaid_amount: int = 0
    currency: str = "usd"
    void_invoices: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "standing": self.standing.value,
            "at_period_end": self.at_period_end,
            "ends_at": self.ends_at.isoformat(),
            "unpaid": self.unpaid,
            "unpaid_amount": self.unpaid_amount,
            "currency": self.currency,
            "void_invoices": list(self.void_invoices),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CancelPlan:
        unpaid = str(data.get("unpaid") or "none")
        known: Unpaid = unpaid if unpaid in ("void", "leave_open", "collect") else "none"  # type: ignore[assignment]
        return cls(
            standing=Standing(str(data["standing"])),
            at_period_end=bool(data["at_period_end"]),
            ends_at=datetime.fromisoformat(str(data["ends_at"])),
            unpaid=known,
            unpaid_amount=int(data.get("unpaid_amount") or 0),
            currency=str(data.get("currency") or "usd"),
            void_invoices=tuple(str(i) for i in data.get("void_invoices") or ()),
        )


def plan_cancel(
    sub: SubscriptionNow,
    *,
    cancel_at_period_end: bool,
    unpaid_invoice: UnpaidInvoice,
    now: datetime,
) -> CancelPlan:
    """What cancelling `sub` now does under the rules (`[cancel_flow] cancel_at` and
    `unpaid_invoice`). A period end that has passed is never promised: the plan ends now."""
    standing = standing_of(sub)
    period_end = sub.period_end if sub.period_end is not None and sub.period_end > now else None
    if standing is Standing.PAST_DUE:
        amount, currency = sub.unpaid_amount, sub.currency
        if unpaid_invoice == "collect" and period_end is not None:
            return CancelPlan(standing, True, period_end, "collect", amount, currency)
        if unpaid_invoice == "void":
            return CancelPlan(standing, False, now, "void", amount, currency, sub.open_invoices)
        # Left open; "collect" with no period left to collect in ends now, as left open.
        return CancelPlan(standing, False, now, "leave_open", amount, currency)
    if cancel_at_period_end and period_end is not None and standing is not Standing.ENDED:
        ends = period_end
        if standing is Standing.ENDING and sub.cancel_at is not None and sub.cancel_at > now:
            ends = min(sub.cancel_at, period_end)
        return CancelPlan(standing, True, ends, currency=sub.currency)
    return CancelPlan(standing, False, now, currency=sub.currency)
