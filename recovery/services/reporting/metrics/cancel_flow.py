"""Cancel-flow figures: the sessions created in the period, in this currency.

- sessions: all; saved: accepted an offer; cancelled; abandoned (left or expired without
  deciding); undecided: still open.
- save rate = saved / (saved + cancelled): of the subscribers who made a decision, the share who
  stayed. Abandoned and open sessions are left out (they neither cancelled nor accepted).
- saves by offer: saved sessions per offer kind.
- reasons: sessions per survey reason (`none` when none was given); recent answers: the latest
  free-text answers (newest first).
- revenue saved: the monthly revenue the saved subscriptions go on paying (`mrr_after`: a pause
  keeps the full plan, only deferred; a discount or downgrade keeps the reduced amount);
  revenue conceded: what the offers gave away (mrr_before - mrr_after over the saves).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from recovery.models import CancelSession
from recovery.models.cancel_flow import Outcome
from recovery.services.reporting.metrics.result import Answer, CancelFlowStats, Keyed, share

RECENT_ANSWERS = 10
SAVED_OUTCOMES = (
    Outcome.SAVED_BY_PAUSE.value,
    Outcome.SAVED_BY_DOWNGRADE.value,
    Outcome.SAVED_BY_LONGER_TERM.value,
    Outcome.SAVED_BY_DISCOUNT.value,
)


def cancel_flow(
    session: Session, currency: str, period_from: datetime, period_to: datetime
) -> CancelFlowStats:
    in_period = and_(
        CancelSession.currency == currency,
        CancelSession.created_at >= period_from,
        CancelSession.created_at < period_to,
    )
    rows = session.execute(
        select(
            CancelSession.outcome,
            CancelSession.reason,
            func.count(),
            func.coalesce(func.sum(CancelSession.mrr_before), 0),
            func.coalesce(func.sum(CancelSession.mrr_after), 0),
        )
        .where(in_period)
        .group_by(CancelSession.outcome, CancelSession.reason)
    ).all()
    by_outcome: Counter[str] = Counter()
    kept: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    reason_mrr: Counter[str] = Counter()
    conceded = 0
    for outcome, reason, n, mrr_before, mrr_after in rows:
        count, before, after = int(n), int(mrr_before or 0), int(mrr_after or 0)
        by_outcome[outcome or "undecided"] += count
        reasons[reason or "none"] += count
        reason_mrr[reason or "none"] += before
        if outcome in SAVED_OUTCOMES:
            kept[outcome] += after
            conceded += before - after
    saved = sum(by_outcome[o] for o in SAVED_OUTCOMES)
    cancelled = by_outcome[Outcome.CANCELLED]
    answers = session.execute(
        select(
            func.coalesce(CancelSession.survey_at, CancelSession.created_at),
            CancelSession.reason,
            CancelSession.reason_text,
        )
        .where(in_period)
        .where(CancelSession.reason_text.is_not(None), CancelSession.reason_text != "")
        .order_by(
            func.coalesce(CancelSession.survey_at, CancelSession.created_at).desc(),
            CancelSession.id.desc(),
        )
        .limit(RECENT_ANSWERS)
    ).all()
    return CancelFlowStats(
        sessions=sum(by_outcome.values()),
        saved=saved,
        cancelled=cancelled,
        abandoned=by_outcome[Outcome.ABANDONED],
        undecided=by_outcome["undecided"],
        save_rate=share(saved, saved + cancelled),
        saves_by_offer=tuple(
            Keyed(o.removeprefix("saved_by_"), by_outcome[o], kept[o]) for o in SAVED_OUTCOMES
        ),
        reasons=_ordered(reasons, reason_mrr),
        recent_answers=tuple(Answer(r[0], r[1], str(r[2])) for r in answers),
        revenue_saved=sum(kept.values()),
        revenue_conceded=conceded,
    )


def _ordered(counts: Mapping[str, int], amounts: Mapping[str, int]) -> tuple[Keyed, ...]:
    return tuple(
        Keyed(k, counts[k], amounts.get(k, 0))
        for k in sorted(counts, key=lambda k: (-counts[k], k))
    )
