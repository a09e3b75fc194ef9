"""A customer's contacts and outreach at a glance, for the customer's API page
(GET /api/v1/customers/<id>: `contacts` and `outreach`: annual offers, win-backs, pauses taken
instead of a loss, unsubscribes)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from recovery.models import DunningPause, MarketingOptOut, TermOffer, WinBack
from recovery.services.outreach import contacts


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def customer_outreach(session: Session, customer_id: str) -> dict[str, Any]:
    offers = session.scalars(
        select(TermOffer).where(TermOffer.customer_id == customer_id).order_by(TermOffer.id)
    ).all()
    win_backs = session.scalars(
        select(WinBack).where(WinBack.customer_id == customer_id).order_by(WinBack.id)
    ).all()
    pauses = session.scalars(
        select(DunningPause)
        .where(DunningPause.customer_id == customer_id)
        .order_by(DunningPause.id)
    ).all()
    opt_outs = session.scalars(
        select(MarketingOptOut).where(MarketingOptOut.customer_id == customer_id)
    ).all()
    return {
        "contacts": [contacts.as_json(c) for c in contacts.active(session, customer_id)],
        "outreach": {
            "term_offers": [
                {
                    "subscription": o.subscription_id,
                    "from_price": o.monthly_price,
                    "to_price": o.annual_price,
                    "status": o.status,
                    "offered_at": _iso(o.offered_at),
                    "decided_at": _iso(o.decided_at),
                    "charged_amount": o.charged_amount,
                    "currency": o.currency,
                }
                for o in offers
            ],
            "win_backs": [
                {
                    "subscription": w.subscription_id,
                    "ended_by": w.ended_by,
                    "ended_at": _iso(w.ended_at),
                    "status": w.status,
                    "new_subscription": w.new_subscription_id,
                    "reactivated_at": _iso(w.reactivated_at),
                    "monthly_revenue_back": w.reactivated_amount,
                    "currency": w.currency,
                }
                for w in win_backs
            ],
            "pauses": [
                {
                    "subscription": p.subscription_id,
                    "case": p.case_id,
                    "status": p.status,
                    "months": p.months,
                    "chosen_at": _iso(p.chosen_at),
                    "resumes_at": _iso(p.resumes_at),
                    "invoice_voided": p.invoice_id,
                    "amount_voided": p.amount_voided,
                    "currency": p.currency,
                }
                for p in pauses
            ],
            "unsubscribed": [{"email": o.email, "at": _iso(o.at), "via": o.via} for o in opt_outs],
        },
    }
