"""Saves validated and recoveries durable at 30 / 60 / 90 days (`domain.experiment_outcomes`):
read for the overview, GET /api/v1/metrics and the experiment results alike.

Two reads whatever the number of candidates, plus one per 500 subscriptions: the saves or
recoveries with when their subscription was cancelled, then the invoices of those
subscriptions created since the earliest of them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from recovery.domain.cases import CaseStatus
from recovery.domain.experiment_outcomes import WINDOWS, DueInvoice, Held, HeldCounts, held
from recovery.models import CancelSession, Invoice, RecoveryCase, Subscription
from recovery.services.reporting.saves import (
    SAVED_OUTCOMES,
    cancelled_in_flow_after,
    cancelled_in_stripe_after,
)

CHUNK = 500  # subscription ids per IN list: well under every database's parameter limit


@dataclass(frozen=True)
class Candidate:
    """A save or a recovery: when it happened and when its subscription was cancelled since."""

    key: str  # the cancel session's id, or the case's id
    subscription_id: str | None
    start: datetime
    cancelled_at: datetime | None


@dataclass(frozen=True)
class Validated:
    """Per window (30, 60, 90 days), how many held, failed and are still pending."""

    saves: tuple[HeldCounts, ...] = tuple(HeldCounts(d) for d in WINDOWS)
    recoveries: tuple[HeldCounts, ...] = tuple(HeldCounts(d) for d in WINDOWS)


def saves(session: Session, *where: ColumnElement[bool]) -> list[Candidate]:
    """Sessions that accepted an offer (reversed ones too: they are the not-validated ones)."""
    cancelled = func.coalesce(cancelled_in_flow_after(), cancelled_in_stripe_after())
    rows = session.execute(
        select(CancelSession.id, CancelSession.subscription_id, CancelSession.decided_at, cancelled)
        .where(CancelSession.outcome.in_(SAVED_OUTCOMES), CancelSession.decided_at.is_not(None))
        .where(*where)
    ).all()
    return [Candidate(str(r[0]), r[1], r[2], r[3]) for r in rows if r[2] is not None]


def recoveries(session: Session, *where: ColumnElement[bool]) -> list[Candidate]:
    cancelled = func.coalesce(Subscription.canceled_at, Subscription.ended_at)
    rows = session.execute(
        select(RecoveryCase.id, RecoveryCase.subscription_id, RecoveryCase.closed_at, cancelled)
        .outerjoin(Subscription, Subscription.id == RecoveryCase.subscription_id)
        .where(RecoveryCase.status == CaseStatus.RECOVERED.value)
        .where(RecoveryCase.closed_at.is_not(None))
        .where(*where)
    ).all()
    return [Candidate(str(r[0]), r[1], r[2], r[3]) for r in rows if r[2] is not None]


def invoices_of(session: Session, candidates: Sequence[Candidate]) -> dict[str, list[DueInvoice]]:
    """The invoices of the candidates' subscriptions created in the windows' span."""
    ids = sorted({c.subscription_id for c in candidates if c.subscription_id})
    if not ids:
        return {}
    since = int(min(c.start for c in candidates).timestamp())
    until = int((max(c.start for c in candidates) + timedelta(days=max(WINDOWS))).timestamp())
    out: dict[str, list[DueInvoice]] = {}
    for i in range(0, len(ids), CHUNK):
        rows = session.execute(
            select(Invoice.subscription_id, Invoice.created, Invoice.status, Invoice.paid_at)
            .where(Invoice.subscription_id.in_(ids[i : i + CHUNK]))
            .where(Invoice.created > since, Invoice.created <= until)
        ).all()
        for sub, created, status, paid_at in rows:
            if created is None:
                continue
            due = datetime.fromtimestamp(int(created), UTC)
            out.setdefault(str(sub), []).append(DueInvoice(due, status, paid_at))
    return out


def outcomes(
    candidates: Iterable[Candidate], invoices: Mapping[str, list[DueInvoice]], now: datetime
) -> dict[str, tuple[Held, ...]]:
    """Each candidate's outcome at 30, 60 and 90 days."""
    return {
        c.key: tuple(
            held(c.start, days, now, c.cancelled_at, invoices.get(c.subscription_id or "", ()))
            for days in WINDOWS
        )
        for c in candidates
    }


def tally(per_candidate: Iterable[tuple[Held, ...]]) -> tuple[HeldCounts, ...]:
    counts = [HeldCounts(d) for d in WINDOWS]
    for held_at in per_candidate:
        counts = [c.add(h) for c, h in zip(counts, held_at, strict=True)]
    return tuple(counts)


def validated(
    session: Session, currency: str, period_from: datetime, period_to: datetime, now: datetime
) -> Validated:
    """The period's saves (cancel sessions started in it) and recoveries (cases opened in it)."""
    found_saves = saves(
        session,
        CancelSession.currency == currency,
        CancelSession.created_at >= period_from,
        CancelSession.created_at < period_to,
    )
    found_recoveries = recoveries(
        session,
        RecoveryCase.currency == currency,
        RecoveryCase.opened_at >= period_from,
        RecoveryCase.opened_at < period_to,
    )
    invoices = invoices_of(session, [*found_saves, *found_recoveries])
    return Validated(
        saves=tally(outcomes(found_saves, invoices, now).values()),
        recoveries=tally(outcomes(found_recoveries, invoices, now).values()),
    )


def as_json(counts: Sequence[HeldCounts]) -> list[dict[str, Any]]:
    return [
        {"days": c.days, "held": c.held, "not_held": c.not_held, "pending": c.pending}
        for c in counts
    ]
