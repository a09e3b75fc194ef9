"""Saves validated and recoveries durable at 30 / 60 / 90 days (`domain.experiment_outcomes`):
read for the overview, GET /api/v1/metrics and the experiment results alike.

Two statements whatever the number of candidates: the saves and recoveries with when their
subscription was cancelled, then the invoices of those subscriptions created in the windows."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, String, cast, func, literal, select, union_all
from sqlalchemy.orm import Session

from recovery.domain.cases import CaseStatus
from recovery.domain.experiment_outcomes import WINDOWS, DueInvoice, Held, HeldCounts, held
from recovery.models import CancelSession, Invoice, RecoveryCase, Subscription
from recovery.services.reporting.saves import (
    SAVED_OUTCOMES,
    cancelled_in_flow_after,
    cancelled_in_stripe_after,
)


@dataclass(frozen=True)
class Candidate:
    """A save or a recovery: when it happened and when its subscription was cancelled since."""

    key: str  # the cancel session's id, or the case's id
    subscription_id: str | None
    start: datetime
    cancelled_at: datetime | None
    opened: datetime  # the session's creation, the case's opening: the period it counts in


@dataclass(frozen=True)
class Validated:
    """Per window (30, 60, 90 days), how many held, failed and are still pending."""

    saves: tuple[HeldCounts, ...] = tuple(HeldCounts(d) for d in WINDOWS)
    recoveries: tuple[HeldCounts, ...] = tuple(HeldCounts(d) for d in WINDOWS)


def _saves(*where: ColumnElement[bool]) -> Select[str, str, Any, Any, Any, Any]:
    """Sessions that accepted an offer (reversed ones too: they are the not-validated ones)."""
    cancelled = func.coalesce(cancelled_in_flow_after(), cancelled_in_stripe_after())
    return (
        select(
            literal("save").label("kind"),
            CancelSession.id.label("key"),
            CancelSession.subscription_id.label("subscription_id"),
            CancelSession.decided_at.label("start"),
            cancelled.label("cancelled_at"),
            CancelSession.created_at.label("opened"),
        )
        .where(CancelSession.outcome.in_(SAVED_OUTCOMES), CancelSession.decided_at.is_not(None))
        .where(*where)
    )


def _recoveries(*where: ColumnElement[bool]) -> Select[str, str, Any, Any, Any, Any]:
    cancelled = func.coalesce(Subscription.canceled_at, Subscription.ended_at)
    return (
        select(
            literal("recovery").label("kind"),
            cast(RecoveryCase.id, String).label("key"),
            RecoveryCase.subscription_id.label("subscription_id"),
            RecoveryCase.closed_at.label("start"),
            cancelled.label("cancelled_at"),
            RecoveryCase.opened_at.label("opened"),
        )
        .outerjoin(Subscription, Subscription.id == RecoveryCase.subscription_id)
        .where(RecoveryCase.status == CaseStatus.RECOVERED.value)
        .where(RecoveryCase.closed_at.is_not(None))
        .where(*where)
    )


def read(
    session: Session,
    saves_where: Sequence[ColumnElement[bool]] | None,
    recoveries_where: Sequence[ColumnElement[bool]] | None,
    *,
    saves_also: Sequence[Sequence[ColumnElement[bool]]] = (),
    recoveries_also: Sequence[Sequence[ColumnElement[bool]]] = (),
) -> tuple[list[Candidate], list[Candidate], dict[str, list[DueInvoice]]]:
    """The saves and recoveries matching each filter (None: none of that kind), in one
    statement, and their subscriptions' invoices in a second: two statements whatever their
    number. `saves_also` / `recoveries_also`: more filters, each its own part of the same
    statement (disjoint from the others: a row two parts select is read twice), so that each
    part is one index range scan rather than the whole table for an OR of unlike ranges."""
    parts = []
    if saves_where is not None:
        parts.append(_saves(*saves_where))
    parts.extend(_saves(*where) for where in saves_also)
    if recoveries_where is not None:
        parts.append(_recoveries(*recoveries_where))
    parts.extend(_recoveries(*where) for where in recoveries_also)
    if not parts:
        return [], [], {}
    both = union_all(*parts).subquery()
    found: dict[str, list[Candidate]] = {"save": [], "recovery": []}
    for kind, key, sub, start, cancelled_at, opened in session.execute(select(both)).all():
        began, counted = _aware(start), _aware(opened)
        if began is not None and counted is not None:
            found[str(kind)].append(Candidate(str(key), sub, began, _aware(cancelled_at), counted))
    candidates = [*found["save"], *found["recovery"]]
    subscriptions = select(both.c.subscription_id).where(both.c.subscription_id.is_not(None))
    return found["save"], found["recovery"], _invoices(session, candidates, subscriptions)


def _aware(value: Any) -> datetime | None:
    """A timestamp read through a UNION comes back without its column type (SQLite: text)."""
    if value is None:
        return None
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    assert isinstance(at, datetime)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _invoices(
    session: Session, candidates: Sequence[Candidate], subscriptions: Select[Any]
) -> dict[str, list[DueInvoice]]:
    """The invoices of the candidates' subscriptions created in the windows' span."""
    if not candidates:
        return {}
    since = int(min(c.start for c in candidates).timestamp())
    until = int((max(c.start for c in candidates) + timedelta(days=max(WINDOWS))).timestamp())
    rows = session.execute(
        select(Invoice.subscription_id, Invoice.created, Invoice.status, Invoice.paid_at)
        .where(Invoice.subscription_id.in_(subscriptions))
        .where(Invoice.created > since, Invoice.created <= until)
    ).all()
    out: dict[str, list[DueInvoice]] = {}
    for sub, created, status, paid_at in rows:
        if created is not None:
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
    found_saves, found_recoveries, invoices = read(
        session,
        [
            CancelSession.currency == currency,
            CancelSession.created_at >= period_from,
            CancelSession.created_at < period_to,
        ],
        [
            RecoveryCase.currency == currency,
            RecoveryCase.opened_at >= period_from,
            RecoveryCase.opened_at < period_to,
        ],
    )
    return Validated(
        saves=tally(outcomes(found_saves, invoices, now).values()),
        recoveries=tally(outcomes(found_recoveries, invoices, now).values()),
    )


def as_json(counts: Sequence[HeldCounts]) -> list[dict[str, Any]]:
    return [
        {"days": c.days, "held": c.held, "not_held": c.not_held, "pending": c.pending}
        for c in counts
    ]
