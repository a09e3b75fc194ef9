"""The dashboard's cancel-session list: filters, keyset paging on (created_at, id), CSV rows.

A save that a later cancel superseded (`saves.py`) is listed as reversed, with when: the
`saved_by_*` filters find the saves that held, `save_reversed` the others."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from recovery.models import CancelSession, Customer
from recovery.models.cancel_flow import Outcome
from recovery.runtime import Runtime
from recovery.services.reporting import paging, saves
from recovery.services.reporting.case_list import BadFilter, mask_email

PAGE_SIZE = 50
EXPORT_BATCH = 500
UNDECIDED = "undecided"  # no outcome yet: the subscriber is still in the flow
OUTCOMES = (*(o.value for o in Outcome), saves.REVERSED, UNDECIDED)
OUTCOME_LABELS = {
    Outcome.SAVED_BY_PAUSE.value: "Saved by a pause",
    Outcome.SAVED_BY_DOWNGRADE.value: "Saved by a downgrade",
    Outcome.SAVED_BY_LONGER_TERM.value: "Saved by a longer term",
    Outcome.SAVED_BY_DISCOUNT.value: "Saved by a discount",
    saves.REVERSED: "Saved, then cancelled",
    Outcome.CANCELLED.value: "Cancelled",
    Outcome.ABANDONED.value: "Left without deciding",
    UNDECIDED: "Still deciding",
}
STRIPE_LABELS = {
    "none": "nothing to change",
    "pending": "waiting to be applied",
    "applied": "applied",
    "failed": "Stripe refused",
}
REASON_SHAPE = re.compile(r"^[a-z0-9_]{1,40}$")

SessionSelect = Select[CancelSession, str | None, datetime | None, datetime | None]


@dataclass(frozen=True)
class SessionFilters:
    outcome: str | None = None
    reason: str | None = None
    since: date | None = None

    def query_args(self) -> dict[str, str]:
        out = {"outcome": self.outcome, "reason": self.reason}
        args = {k: v for k, v in out.items() if v}
        if self.since:
            args["since"] = self.since.isoformat()
        return args


def parse_filters(args: Mapping[str, str]) -> SessionFilters:
    outcome = (args.get("outcome") or "").strip() or None
    if outcome is not None and outcome not in OUTCOMES:
        raise BadFilter("Unknown outcome.")
    reason = (args.get("reason") or "").strip() or None
    if reason is not None and not REASON_SHAPE.match(reason):
        raise BadFilter("Unknown reason.")
    raw_since = (args.get("since") or "").strip()
    since = None
    if raw_since:
        try:
            since = date.fromisoformat(raw_since)
        except ValueError:
            raise BadFilter("The date must look like 2026-11-02.") from None
    return SessionFilters(outcome=outcome, reason=reason, since=since)


@dataclass(frozen=True)
class SessionRow:
    id: str
    created_at: datetime
    customer_id: str
    customer_email: str  # whole: shown through `email_for`, by the reader's role
    subscription_id: str
    source: str
    reason: str | None
    reason_text: str | None
    offer_shown: str | None
    outcome: str | None
    decided_at: datetime | None
    currency: str
    mrr_before: int
    mrr_after: int | None
    stripe_status: str
    save_reversed_at: datetime | None = None  # a save, cancelled after all at this time

    @property
    def shown_outcome(self) -> str:
        """The outcome as it stands: a reversed save is no save."""
        if self.save_reversed_at is not None:
            return saves.REVERSED
        return self.outcome or UNDECIDED

    def email_for(self, full: bool) -> str:
        return self.customer_email if full else mask_email(self.customer_email)


@dataclass(frozen=True)
class Page:
    rows: list[SessionRow]
    next_cursor: str | None


def decode_cursor(value: str | None) -> tuple[datetime, str] | None:
    if not value:
        return None
    try:
        return paging.decode_cursor(value, str)
    except paging.BadCursor:
        raise BadFilter("That page link is not valid; start from the first page.") from None


def _where(stmt: SessionSelect, filters: SessionFilters) -> SessionSelect:
    if filters.outcome == UNDECIDED:
        stmt = stmt.where(CancelSession.outcome.is_(None))
    elif filters.outcome == saves.REVERSED:
        stmt = stmt.where(saves.is_reversed())
    elif filters.outcome in saves.SAVED_OUTCOMES:
        stmt = stmt.where(CancelSession.outcome == filters.outcome, ~saves.is_reversed())
    elif filters.outcome:
        stmt = stmt.where(CancelSession.outcome == filters.outcome)
    if filters.reason:
        stmt = stmt.where(CancelSession.reason == filters.reason)
    if filters.since:
        stmt = stmt.where(CancelSession.created_at >= datetime.combine(filters.since, time(), UTC))
    return stmt


def _row(found: paging.AnyRow) -> SessionRow:
    s, email, in_flow, in_stripe = found
    return SessionRow(
        id=s.id,
        created_at=s.created_at,
        customer_id=s.customer_id,
        customer_email=email or "",
        subscription_id=s.subscription_id,
        source=s.source,
        reason=s.reason,
        reason_text=s.reason_text,
        offer_shown=s.offer_shown,
        outcome=s.outcome,
        decided_at=s.decided_at,
        currency=s.currency,
        mrr_before=s.mrr_before,
        mrr_after=s.mrr_after,
        stripe_status=s.stripe_status,
        save_reversed_at=saves.reversed_at(s.outcome, in_flow, in_stripe),
    )


KEYS = (CancelSession.created_at, CancelSession.id)


def list_sessions(
    session: Session,
    filters: SessionFilters,
    *,
    after: tuple[datetime, str] | None = None,
    limit: int = PAGE_SIZE,
) -> Page:
    stmt: Any = select(
        CancelSession,
        Customer.email,
        saves.cancelled_in_flow_after(),
        saves.cancelled_in_stripe_after(),
    ).outerjoin(Customer, Customer.id == CancelSession.customer_id)
    found = paging.newest_first(
        session, _where(stmt, filters), KEYS, after=after, limit=limit, row=_row
    )
    rows = found.rows
    last = rows[-1] if found.has_more and rows else None
    return Page(
        rows=rows, next_cursor=paging.encode_cursor(last.created_at, last.id) if last else None
    )


def page(rt: Runtime, filters: SessionFilters, after: tuple[datetime, str] | None) -> Page:
    """The list page's sessions, read in one short transaction."""
    with rt.db.reading() as session:
        return list_sessions(session, filters, after=after)


def iter_sessions(rt: Runtime, filters: SessionFilters) -> Iterator[SessionRow]:
    """Every matching session in batches, each read in its own short transaction."""
    after: tuple[datetime, str] | None = None
    while True:
        with rt.db.reading() as session:
            batch = list_sessions(session, filters, after=after, limit=EXPORT_BATCH)
        yield from batch.rows
        if batch.next_cursor is None or not batch.rows:
            return
        after = (batch.rows[-1].created_at, batch.rows[-1].id)
