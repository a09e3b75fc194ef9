"""Cancel sessions as records: the JSON the API lists and the business webhook carries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import object_session

from recovery.models import CancelSession
from recovery.models.cancel_flow import Outcome
from recovery.services.cancel import messages as cancel_messages
from recovery.services.experiments.assignment import experiment_of
from recovery.services.messaging import outbox

SAVED_OUTCOMES = frozenset(o.value for o in Outcome if o.value.startswith("saved_by_"))


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def effective_outcome(row: CancelSession, now: datetime) -> str | None:
    """An undecided session past its expiry is abandoned, even before the worker records it."""
    if row.outcome is None and row.expires_at <= now:
        return Outcome.ABANDONED.value
    return row.outcome


def revenue(row: CancelSession, outcome: str | None) -> dict[str, Any]:
    """Monthly revenue in minor units. Kept/lost count only decisions that changed something:
    a save keeps what the subscription now brings in (a downgrade or a discount loses the
    difference); a cancellation loses everything; an abandoned session counts neither."""
    kept: int | None = None
    lost: int | None = None
    if outcome in SAVED_OUTCOMES and row.mrr_after is not None:
        kept, lost = row.mrr_after, max(row.mrr_before - row.mrr_after, 0)
    elif outcome == Outcome.CANCELLED:
        kept, lost = 0, row.mrr_before
    return {
        "currency": row.currency,
        "before": row.mrr_before,
        "after": row.mrr_after,
        "kept": kept,
        "lost": lost,
    }


def _messages(row: CancelSession) -> list[dict[str, Any]]:
    """The session's emails (confirmation, pause reminder) and how their delivery went, read
    through the session the row was loaded in."""
    session = object_session(row)
    return [] if session is None else outbox.messages_about(session, cancel_messages.about(row))


def _experiment(row: CancelSession) -> dict[str, str] | None:
    """The experiment the session was placed in and its arm (the variant), if any."""
    session = object_session(row)
    if session is None:
        return None
    return experiment_of(session, cancel_session_id=row.id)


def session_json(row: CancelSession, now: datetime) -> dict[str, Any]:
    outcome = effective_outcome(row, now)
    return {
        "id": row.id,
        "customer": row.customer_id,
        "subscription": row.subscription_id,
        "source": row.source,
        "variant": row.variant,
        "experiment": _experiment(row),
        "locale": row.locale,
        "display_locale": row.display_locale,
        "metadata": row.metadata_ or {},
        "created_at": _iso(row.created_at),
        "expires_at": _iso(row.expires_at),
        "steps": {
            "started_at": _iso(row.created_at),
            "survey_at": _iso(row.survey_at),
            "offer_shown_at": _iso(row.offer_shown_at),
            "decided_at": _iso(row.decided_at),
            "applied_at": _iso(row.applied_at),
        },
        "reason": row.reason,
        "reason_text": row.reason_text,
        "offer_shown": None
        if row.offer_shown is None
        else {"kind": row.offer_shown, "terms": row.offer_terms or {}},
        "outcome": outcome,
        "cancel_at_period_end": row.cancel_at_period_end,
        "ends_at": _iso(row.ends_at),
        "stripe": {"status": row.stripe_status, "error": row.stripe_error},
        "monthly_revenue": revenue(row, outcome),
        "messages": _messages(row),
    }


def list_query(since: datetime | None, outcome: str | None, now: datetime) -> Select[CancelSession]:
    query = select(CancelSession).order_by(CancelSession.created_at.desc(), CancelSession.id.desc())
    if since is not None:
        query = query.where(CancelSession.created_at >= since)
    if outcome == Outcome.ABANDONED:
        query = query.where(
            or_(
                CancelSession.outcome == Outcome.ABANDONED.value,
                and_(CancelSession.outcome.is_(None), CancelSession.expires_at <= now),
            )
        )
    elif outcome == "open":
        query = query.where(CancelSession.outcome.is_(None), CancelSession.expires_at > now)
    elif outcome == "saved":
        query = query.where(CancelSession.outcome.in_(sorted(SAVED_OUTCOMES)))
    elif outcome is not None:
        query = query.where(CancelSession.outcome == outcome)
    return query


OUTCOME_FILTERS = frozenset({*(o.value for o in Outcome), "saved", "open"})
