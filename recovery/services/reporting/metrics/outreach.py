"""Outreach beyond the failed payment, for one currency and one period [from, to):

- annual-term offers: `offers_sent` (offers whose email went out in the period),
  `offers_accepted` (switched in the period) and `revenue_moved_to_annual` (the yearly
  amounts those switches bill, minor units a year);
- win-back: `win_backs_sent` (sequences with a note sent in the period), `reactivated`
  (customers who restarted through the link in the period) and `reactivated_revenue` (the
  monthly revenue they brought back).

One query whatever the volume; amounts as Stripe reports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import String, cast, exists, func, literal, select
from sqlalchemy.orm import Session

from recovery.models import MessageStatus, OutboxMessage, TermOffer, WinBack


@dataclass(frozen=True)
class OutreachStats:
    offers_sent: int = 0
    offers_accepted: int = 0
    revenue_moved_to_annual: int = 0
    win_backs_sent: int = 0
    reactivated: int = 0
    reactivated_revenue: int = 0


def _sent(kind: str, row_id: Any, start: datetime, end: datetime) -> Any:
    """EXISTS a message about this offer (or win-back) that went out in the period."""
    about = literal(f"outreach:{kind}:") + cast(row_id, String)
    return exists(
        select(OutboxMessage.id)
        .where(OutboxMessage.about == about, OutboxMessage.status == MessageStatus.SENT)
        .where(OutboxMessage.sent_at >= start, OutboxMessage.sent_at < end)
    )


def outreach(session: Session, currency: str, start: datetime, end: datetime) -> OutreachStats:
    """All six figures in one query (scalar subqueries)."""
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
        )
    ).one()
    sent, won, moved, notes, returned, revenue = (int(value or 0) for value in row)
    return OutreachStats(
        offers_sent=sent,
        offers_accepted=won,
        revenue_moved_to_annual=moved,
        win_backs_sent=notes,
        reactivated=returned,
        reactivated_revenue=revenue,
    )
