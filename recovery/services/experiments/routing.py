"""Routing to the winner: once a day, each active Thompson experiment's shares are recomputed
from its arms' finished outcomes (`domain.experiments.thompson_shares`), recorded with the
posteriors that caused them (an `ExperimentRouting` row, shown in the results, and a log line),
and new customers are assigned under them from then on (`assignment.shares_now`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Row, case, func, select
from sqlalchemy.orm import Session

from recovery.domain.cases import CaseStatus
from recovery.domain.experiments import Experiment, Outcomes, Reassignment, thompson_shares
from recovery.models import CancelSession, ExperimentRouting, ExperimentSubject, RecoveryCase
from recovery.rules import Rules
from recovery.runtime import Runtime
from recovery.services.reporting.saves import SAVED_OUTCOMES, is_reversed

log = logging.getLogger(__name__)
JOB_NAME = "experiments.reroute"
DECIDED = (*SAVED_OUTCOMES, "cancelled")


def dunning_outcomes(
    session: Session, experiment: Experiment, window_days: int, now: datetime
) -> dict[str, Outcomes]:
    """Per arm, the cases whose retry window is over: recovered or not. A case still inside
    its window is left out, not counted as lost (see `domain.experiments.Outcomes`)."""
    recovered = RecoveryCase.status == CaseStatus.RECOVERED.value
    rows = session.execute(
        select(ExperimentSubject.arm, recovered, func.count())
        .join(RecoveryCase, RecoveryCase.id == ExperimentSubject.case_id)
        .where(ExperimentSubject.experiment_key == experiment.key)
        .where(RecoveryCase.opened_at <= now - timedelta(days=window_days))
        .group_by(ExperimentSubject.arm, recovered)
    ).all()
    return _outcomes(rows)


def cancel_flow_outcomes(session: Session, experiment: Experiment) -> dict[str, Outcomes]:
    """Per arm, the sessions that ended in a decision: a save kept, or a cancel (a save
    reversed since counts as a cancel)."""
    kept = case((CancelSession.outcome.in_(SAVED_OUTCOMES) & ~is_reversed(), True), else_=False)
    per_session = (
        select(ExperimentSubject.arm.label("arm"), kept.label("kept"))
        .join(CancelSession, CancelSession.id == ExperimentSubject.cancel_session_id)
        .where(ExperimentSubject.experiment_key == experiment.key)
        .where(CancelSession.outcome.in_(DECIDED))
        .subquery()
    )
    rows = session.execute(
        select(per_session.c.arm, per_session.c.kept, func.count()).group_by(
            per_session.c.arm, per_session.c.kept
        )
    ).all()
    return _outcomes(rows)


def _outcomes(rows: Sequence[Row[str, bool, int]]) -> dict[str, Outcomes]:
    out: dict[str, Outcomes] = {}
    for arm, good, n in rows:
        seen = out.get(str(arm), Outcomes())
        if good:
            out[str(arm)] = Outcomes(seen.recovered + int(n), seen.not_recovered)
        else:
            out[str(arm)] = Outcomes(seen.recovered, seen.not_recovered + int(n))
    return out


def reroute(session: Session, experiment: Experiment, rules: Rules, now: datetime) -> Reassignment:
    """New shares for a Thompson experiment, recorded and logged with their posteriors."""
    if experiment.applies_to == "dunning":
        counts = dunning_outcomes(session, experiment, rules.retry.window_days, now)
    else:
        counts = cancel_flow_outcomes(session, experiment)
    arms = {a.name for a in experiment.arms}
    counts = {arm: c for arm, c in counts.items() if arm in arms}  # the holdout is not routed
    # Computed, not sampled: a rerun of the same day's job gives the same shares.
    reassignment = thompson_shares(experiment, counts)
    record = reassignment.as_log()
    session.add(
        ExperimentRouting(
            experiment_key=experiment.key,
            at=now,
            shares=record["shares"],
            posteriors=record,
        )
    )
    log.info("experiment shares reassigned: %s", json.dumps(record, sort_keys=True))
    return reassignment


def daily_job(rt: Runtime, session: Session) -> None:
    now = rt.clock.now()
    for experiment in rt.rules.experiments.experiments:
        if experiment.active and experiment.routing == "thompson":
            reroute(session, experiment, rt.rules, now)
