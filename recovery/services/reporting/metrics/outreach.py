"""Outreach beyond the failed payment, for one currency and one period [from, to):

- annual-term offers: `offers_sent` (offers whose email went out in the period),
  `offers_accepted` (switched in the period) and `revenue_moved_to_annual` (the yearly
  amounts those switches bill, minor units a year);
- win-back: `win_backs_sent` (sequences with a note sent in the period), `reactivated`
  (customers who restarted through the link in the period) and `reactivated_revenue` (the
  monthly revenue they brought back);
- a pause instead of a loss (`retry.end_of_dunning = "offer_pause"`): `pauses` (pauses carried
  out in the period: collection paused, the unpaid invoice voided) and `pauses_resumed` (of
  those, the ones whose subscription has paid an invoice since its pause ended).

One query whatever the volume; amounts as Stripe reports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import String, case, cast, exists, func, literal, select
from sqlalchemy.orm import Session

from recovery.models import DunningPause, Invoice, MessageStatus, OutboxMessage, TermOffer, WinBack


@dataclass(frozen=True)
class OutreachStats:
    offers_sent: int = 0
    offers_accepted: int = 0
    revenue_moved_to_annual: int = 0
    win_backs_sent: int = 0
    reactivated: int = 0
    reactivated_revenue: int = 0
    pauses: int = 0
    pauses_resumed: int = 0


def _sent(kind: str, row_id: Any, start: datetime, end: datetime) -> Any:
    """EXISTS a message about this offer (or win-back) that went out in the period."""
    about = literal(f"outreach:{kind}:") + cast(row_id, String)
    return exists(
        select(OutboxMessage.id)
        .where(OutboxMessage.about == about, OutboxMessage.status == MessageStatus.SENT)
        .where(OutboxMessage.sent_at >= start, OutboxMessage.sent_at < end)
    )


def _paused(start: datetime, end: datetime) -> Any:
    return (
        (DunningPause.status == "accepted")
        & (DunningPause.applied_at >= start)
        & (DunningPause.applied_at < end)
    )


def _resumed_paying() -> Any:
    """EXISTS an invoice of the paused subscription paid since the pause ended."""
    return exists(
        select(Invoice.id).where(
            Invoice.subscription_id == DunningPause.subscription_id,
            Invoice.status == "paid",
            Invoice.amount_paid > 0,
            Invoice.paid_at >= DunningPause.resumes_at,
        )
    )


def pauses_by_currency(
    session: Session, start: datetime, end: datetime
) -> dict[str, tuple[int, int]]:
    """(pauses, of them resumed paying) per currency: one GROUP BY."""
    rows = session.execute(
        select(
            DunningPause.currency,
            func.count(),
            func.sum(case((_resumed_paying(), 1), else_=0)),
        )
        .where(_paused(start, end))
        .group_by(DunningPause.currency)
    ).all()
    return {str(c).lower(): (int(n), int(back or 0)) for c, n, back in rows}


def outreach(session: Session, currency: str, start: datetime, end: datetime) -> OutreachStats:
    """All eight figures in one query (scalar subqueries)."""
    accepted = (
        (TermOffer.status == "accepted")
        & (TermOffer.applied_at >= start)
        & (TermOffer.applied_at < end)
    )
    back = (
        (WinBack.status == "reactivated")
        & (WinBack.reactivated_at >= start)
        & (WinBack.reactivated_at < end)
    )
    row = session.execute(
        select(
            select(func.count(TermOffer.id))
            .where(TermOffer.currency == currency, _sent("term_offer", TermOffer.id, start, end))
            .scalar_subquery(),
            select(func.count(TermOffer.id))
            .where(TermOffer.currency == currency, accepted)
            .scalar_subquery(),
            select(func.coalesce(func.sum(TermOffer.annual_amount * TermOffer.quantity), 0))
            .where(TermOffer.currency == currency, accepted)
            .scalar_subquery(),
            select(func.count(WinBack.id))
            .where(WinBack.currency == currency, _sent("win_back", WinBack.id, start, end))
            .scalar_subquery(),
            select(func.count(WinBack.id))
            .where(WinBack.currency == currency, back)
            .scalar_subquery(),
            select(func.coalesce(func.sum(WinBack.reactivated_amount), 0))
            .where(WinBack.currency == currency, back)
            .scalar_subquery(),
            select(func.count(DunningPause.id))
            .where(DunningPause.currency == currency, _paused(start, end))
            .scalar_subquery(),
            select(func.count(DunningPause.id))
            .where(DunningPause.currency == currency, _paused(start, end), _resumed_paying())
            .scalar_subquery(),
        )
    ).one()
    sent, won, moved, notes, returned, revenue, paused, resumed = (int(v or 0) for v in row)
    return OutreachStats(
        offers_sent=sent,
        offers_accepted=won,
        revenue_moved_to_annual=moved,
        win_backs_sent=notes,
        reactivated=returned,
        reactivated_revenue=revenue,
        pauses=paused,
        pauses_resumed=resumed,
    )
