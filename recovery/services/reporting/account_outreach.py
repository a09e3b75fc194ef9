"""An account's contacts and its outreach, for the dashboard's customer and case pages: who
gets the reminders (contacts and their roles), and what was offered beyond the failed payment -
annual-term offers (sent, accepted, declined), win-backs, pauses taken instead of a loss - and
which addresses unsubscribed from marketing. One statement (a UNION ALL of five reads by
customer id, each indexed)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, String, case, cast, literal, null, select, union_all
from sqlalchemy.orm import Session

from recovery.db import UTCDateTime
from recovery.models import AccountContact, DunningPause, MarketingOptOut, TermOffer, WinBack
from recovery.runtime import Runtime


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


def _null(kind: Any) -> Any:
    return cast(null(), kind)


def _union(customer_id: str) -> Any:
    """The five sources in one statement (the case page's query budget), in one row shape:
    (source, id, s1..s5, n, t1..t3); what each column holds depends on the source."""
    text, when, number = String(), UTCDateTime(), BigInteger()
    contact = select(
        literal("contact", text).label("src"),
        AccountContact.id.label("row"),
        AccountContact.role.label("s1"),
        AccountContact.email.label("s2"),
        AccountContact.phone.label("s3"),
        AccountContact.locale.label("s4"),
        AccountContact.source.label("s5"),
        case((AccountContact.sms_consent, 1), else_=0).label("n"),  # PostgreSQL: no bool->bigint
        AccountContact.created_at.label("t1"),
        _null(when).label("t2"),
        _null(when).label("t3"),
    ).where(AccountContact.customer_id == customer_id, AccountContact.removed_at.is_(None))
    offer = select(
        literal("annual_offer", text),
        TermOffer.id,
        TermOffer.subscription_id,
        TermOffer.status,
        TermOffer.currency,
        _null(text),
        _null(text),
        TermOffer.charged_amount,
        TermOffer.offered_at,
        TermOffer.decided_at,
        _null(when),
    ).where(TermOffer.customer_id == customer_id)
    back = select(
        literal("win_back", text),
        WinBack.id,
        WinBack.subscription_id,
        WinBack.status,
        WinBack.currency,
        _null(text),
        _null(text),
        WinBack.reactivated_amount,
        WinBack.ended_at,
        WinBack.reactivated_at,
        _null(when),
    ).where(WinBack.customer_id == customer_id)
    pause = select(
        literal("pause", text),
        DunningPause.id,
        DunningPause.subscription_id,
        DunningPause.status,
        DunningPause.currency,
        _null(text),
        _null(text),
        DunningPause.amount_voided,
        DunningPause.chosen_at,
        DunningPause.applied_at,
        DunningPause.resumes_at,
    ).where(DunningPause.customer_id == customer_id)
    opt_out = select(
        literal("opt_out", text),
        cast(literal(0), number),
        MarketingOptOut.email,
        MarketingOptOut.via,
        _null(text),
        _null(text),
        _null(text),
        _null(number),
        MarketingOptOut.at,
        _null(when),
        _null(when),
    ).where(MarketingOptOut.customer_id == customer_id)
    return union_all(contact, offer, back, pause, opt_out)


def read(session: Session, customer_id: str) -> AccountOutreach:
    """Contacts, offers, win-backs, pauses and opt-outs: one statement."""
    found: list[tuple[int, ContactLine]] = []
    lines: list[OutreachLine] = []
    opt_outs: list[OptOut] = []
    for src, row_id, s1, s2, s3, s4, s5, n, t1, t2, t3 in session.execute(_union(customer_id)):
        if src == "contact":
            found.append((int(row_id), ContactLine(s1, s2, s3, s4, bool(n), s5)))
        elif src == "opt_out":
            opt_outs.append(OptOut(s1, t1, s2))
        else:
            amount = int(n) if n is not None else None
            lines.append(OutreachLine(src, s1, s2, t1, t2, s3, amount, t3))
    lines.sort(key=lambda line: line.at, reverse=True)
    opt_outs.sort(key=lambda o: o.at, reverse=True)
    found.sort(key=lambda pair: pair[0])
    return AccountOutreach(
        contacts=tuple(contact for _id, contact in found),
        lines=tuple(lines),
        opt_outs=tuple(opt_outs),
    )


def for_customer(rt: Runtime, customer_id: str | None) -> AccountOutreach | None:
    if not customer_id:
        return None
    with rt.db.reading() as session:
        return read(session, customer_id)
