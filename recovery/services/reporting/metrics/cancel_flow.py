"""Cancel-flow figures: the sessions created in the period, in this currency.

Their definitions, as the overview shows them, are `definitions.CANCEL_FLOW`. In short:
- sessions: all; saved: accepted an offer and kept it; save reversed: accepted an offer, then
  cancelled after all (a later session, or in Stripe - `saves.py`); cancelled; abandoned (left
  or expired without deciding); undecided: still open.
- save rate = saves kept / (saves + cancellations): of the subscribers who decided, the share
  who stayed. A reversed save is a decision that did not keep the subscriber: it stays in the
  denominator and leaves the numerator. Abandoned and open sessions are left out.
- saves by offer: kept saves per offer kind.
- reasons: sessions per survey reason (`none` when none was given); recent answers: the latest
  free-text answers (newest first).
- revenue saved: the monthly revenue the kept saves go on paying (`mrr_after`: a pause keeps
  the full plan, only deferred; a discount or downgrade keeps the reduced amount); revenue
  conceded: what the kept offers gave away (mrr_before - mrr_after).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, select
from sqlalchemy.orm import Session

from recovery.models import CancelSession
from recovery.models.cancel_flow import Outcome
from recovery.services.reporting.metrics.result import Answer, CancelFlowStats, Keyed, share
from recovery.services.reporting.saves import SAVED_OUTCOMES, is_reversed

RECENT_ANSWERS = 10


def in_period(currency: str, period_from: datetime, period_to: datetime) -> ColumnElement[bool]:
    return and_(
        CancelSession.currency == currency,
        CancelSession.created_at >= period_from,
        CancelSession.created_at < period_to,
    )


def cancel_flow(
    session: Session, currency: str, period_from: datetime, period_to: datetime
) -> CancelFlowStats:
    sessions = in_period(currency, period_from, period_to)
    return stats_of(session_groups(session, sessions), recent_answers(session, sessions))


def session_groups(
    session: Session, where: ColumnElement[bool], *, by_day: bool = False
) -> list[tuple[Any, ...]]:
    """(outcome, reason, reversed, sessions, mrr before, mrr after) of the sessions `where`
    selects: one GROUP BY; `by_day`: with the day created first (the rollups)."""
    reversed_save = case((is_reversed(), 1), else_=0)
    per_session = (
        select(
            func.date(CancelSession.created_at).label("day"),
            CancelSession.outcome.label("outcome"),
            CancelSession.reason.label("reason"),
            reversed_save.label("reversed"),
            CancelSession.mrr_before.label("mrr_before"),
            CancelSession.mrr_after.label("mrr_after"),
        )
        .where(where)
        .subquery()
    )
    keys = [per_session.c.outcome, per_session.c.reason, per_session.c.reversed]
    if by_day:
        keys.insert(0, per_session.c.day)
    rows = session.execute(
        select(
            *keys,
            func.count(),
            func.coalesce(func.sum(per_session.c.mrr_before), 0),
            func.coalesce(func.sum(per_session.c.mrr_after), 0),
        ).group_by(*keys)
    ).all()
    return [tuple(r) for r in rows]


def recent_answers(session: Session, where: ColumnElement[bool]) -> tuple[Answer, ...]:
    """The latest free-text answers, newest first."""
    answers = session.execute(
        select(
            func.coalesce(CancelSession.survey_at, CancelSession.created_at),
            CancelSession.reason,
            CancelSession.reason_text,
        )
        .where(where)
        .where(CancelSession.reason_text.is_not(None), CancelSession.reason_text != "")
        .order_by(
            func.coalesce(CancelSession.survey_at, CancelSession.created_at).desc(),
            CancelSession.id.desc(),
        )
        .limit(RECENT_ANSWERS)
    ).all()
    return tuple(Answer(r[0], r[1], str(r[2])) for r in answers)


def stats_of(rows: Iterable[Sequence[Any]], answers: tuple[Answer, ...]) -> CancelFlowStats:
    by_outcome: Counter[str] = Counter()
    kept: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    reason_mrr: Counter[str] = Counter()
    conceded = reversed_saves = 0
    for outcome, reason, was_reversed, n, mrr_before, mrr_after in rows:
        count, before, after = int(n), int(mrr_before or 0), int(mrr_after or 0)
        reasons[reason or "none"] += count
        reason_mrr[reason or "none"] += before
        if outcome in SAVED_OUTCOMES and was_reversed:
            reversed_saves += count
            continue
        by_outcome[outcome or "undecided"] += count
        if outcome in SAVED_OUTCOMES:
            kept[outcome] += after
            conceded += before - after
    saved = sum(by_outcome[o] for o in SAVED_OUTCOMES)
    cancelled = by_outcome[Outcome.CANCELLED]
    return CancelFlowStats(
        sessions=sum(by_outcome.values()) + reversed_saves,
        saved=saved,
        saves_reversed=reversed_saves,
        cancelled=cancelled,
        abandoned=by_outcome[Outcome.ABANDONED],
        undecided=by_outcome["undecided"],
        save_rate=share(saved, saved + reversed_saves + cancelled),
        saves_by_offer=tuple(
            Keyed(o.removeprefix("saved_by_"), by_outcome[o], kept[o]) for o in SAVED_OUTCOMES
        ),
        reasons=_ordered(reasons, reason_mrr),
        recent_answers=answers,
        revenue_saved=sum(kept.values()),
        revenue_conceded=conceded,
    )


def _ordered(counts: Mapping[str, int], amounts: Mapping[str, int]) -> tuple[Keyed, ...]:
    return tuple(
        Keyed(k, counts[k], amounts.get(k, 0))
        for k in sorted(counts, key=lambda k: (-counts[k], k))
    )
