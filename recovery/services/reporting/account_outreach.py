"""An account's contacts and its outreach, for the dashboard's customer and case pages: who
gets the reminders (contacts and their roles), and what was offered beyond the failed payment -
annual-term offers (sent, accepted, declined), win-backs, pauses taken instead of a loss - and
which addresses unsubscribed from marketing. A handful of reads by customer id (indexed)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from recovery.models import DunningPause, MarketingOptOut, TermOffer, WinBack
from recovery.runtime import Runtime
from recovery.services.outreach import contacts


@dataclass(frozen=True)
class ContactLine:
    role: str  # billing | owner | admin
    email: str | None
    phone: str | None
    locale: str | None
    sms_consent: bool
    source: str  # metadata | api


@dataclass(frozen=True)
class OutreachLine:
    """One offer or sequence: `kind` annual_offer | win_back | pause, `status` as stored
    (offered, accepted, declined, failed; planned, stopped, reactivated; accepted, failed)."""

    kind: str
    subscription: str
    status: str
    at: datetime  # offered, ended (win-back) or chosen (pause)
    decided_at: datetime | None  # accepted or declined, came back, carried out
    currency: str
    amount: int | None  # charged for the year; monthly revenue back; the unpaid invoice voided
    until: datetime | None = None  # a pause: when billing resumes


@dataclass(frozen=True)
class OptOut:
    email: str
    at: datetime
    via: str


@dataclass(frozen=True)
class AccountOutreach:
    contacts: tuple[ContactLine, ...]
    lines: tuple[OutreachLine, ...]  # newest first
    opt_outs: tuple[OptOut, ...]

    @property
    def empty(self) -> bool:
        return not (self.contacts or self.lines or self.opt_outs)


def read(session: Session, customer_id: str) -> AccountOutreach:
    offers = session.scalars(select(TermOffer).where(TermOffer.customer_id == customer_id)).all()
    backs = session.scalars(select(WinBack).where(WinBack.customer_id == customer_id)).all()
    pauses = session.scalars(
        select(DunningPause).where(DunningPause.customer_id == customer_id)
    ).all()
    lines = [
        OutreachLine(
            "annual_offer",
            o.subscription_id,
            o.status,
            o.offered_at,
            o.decided_at,
            o.currency,
            o.charged_amount,
        )
        for o in offers
    ]
    lines += [
        OutreachLine(
            "win_back",
            w.subscription_id,
            w.status,
            w.ended_at,
            w.reactivated_at,
            w.currency,
            w.reactivated_amount,
        )
        for w in backs
    ]
    lines += [
        OutreachLine(
            "pause",
            p.subscription_id,
            p.status,
            p.chosen_at,
            p.applied_at,
            p.currency,
            p.amount_voided,
            p.resumes_at,
        )
        for p in pauses
    ]
    lines.sort(key=lambda line: line.at, reverse=True)
    opt_outs = session.scalars(
        select(MarketingOptOut)
        .where(MarketingOptOut.customer_id == customer_id)
        .order_by(MarketingOptOut.at.desc())
    ).all()
    return AccountOutreach(
        contacts=tuple(
            ContactLine(c.role, c.email, c.phone, c.locale, c.sms_consent, c.source)
            for c in contacts.active(session, customer_id)
        ),
        lines=tuple(lines),
        opt_outs=tuple(OptOut(o.email, o.at, o.via) for o in opt_outs),
    )


def for_customer(rt: Runtime, customer_id: str | None) -> AccountOutreach | None:
    if not customer_id:
        return None
    with rt.db.reading() as session:
        return read(session, customer_id)
