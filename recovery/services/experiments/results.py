"""Experiment results: per arm (the holdout first) the customers assigned and, for dunning, the
failed and recovered amounts per currency with the recovery rate's 95 % interval (Wilson) and the
lift over the holdout in points (Newcombe) and in money per case (bootstrap); for the cancel
flow, sessions, saves (raw and validated at 30/60/90 days), cancels and the save rate with its
interval and lift. Each lift gets a verdict only once its interval excludes zero
(`domain.stats`). One code path for GET /api/v1/experiments, the dashboard page and its CSV.

The recovery rate counts only *finished* cases - opened at least the retry window ago - so a
recent arm's failures still in progress do not read as a low rate (see
`domain.experiments.Outcomes`); the raw counts and amounts cover every case.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from recovery.domain.cases import CaseStatus
from recovery.domain.experiment_outcomes import HeldCounts
from recovery.domain.experiments import HOLDOUT, Experiment
from recovery.domain.stats import (
    Interval,
    bootstrap_mean_difference,
    newcombe,
    verdict,
    wilson,
)
from recovery.models import (
    CancelSession,
    ExperimentAssignment,
    ExperimentRouting,
    ExperimentSubject,
    RecoveryCase,
)
from recovery.rules import Rules
from recovery.runtime import Runtime
from recovery.services.experiments.assignment import shares_now
from recovery.services.reporting.metrics import validated as held
from recovery.services.reporting.saves import SAVED_OUTCOMES, is_reversed

ROUTING_LOG = 10  # the latest reassignments shown with each Thompson experiment
RESAMPLES = 1_000  # Efron & Tibshirani's (1993) floor for percentile intervals: a page view


def _interval(i: Interval | None) -> list[float] | None:
    return None if i is None else [round(i.low, 4), round(i.high, 4)]


def _rate(successes: int, trials: int) -> tuple[float | None, Interval | None]:
    if trials == 0:
        return None, None
    return round(successes / trials, 4), wilson(successes, trials)


@dataclass
class CurrencyFigures:
    """A dunning arm's cases in one currency."""

    currency: str
    cases: int = 0
    failed_amount: int = 0
    recovered_count: int = 0
    recovered_amount: int = 0
    finished: int = 0  # cases opened at least the retry window ago
    finished_recovered: int = 0
    finished_amounts: list[int] = field(default_factory=list)  # recovered per finished case
    durable: tuple[HeldCounts, ...] = ()  # recoveries that held at 30/60/90 days

    def as_json(self, holdout: CurrencyFigures | None, rng: random.Random) -> dict[str, Any]:
        rate, interval = _rate(self.finished_recovered, self.finished)
        out: dict[str, Any] = {
            "currency": self.currency,
            "cases": self.cases,
            "failed_amount": self.failed_amount,
            "recovered_count": self.recovered_count,
            "recovered_amount": self.recovered_amount,
            "finished_cases": self.finished,
            "finished_recovered": self.finished_recovered,
            "recovery_rate": rate,
            "recovery_rate_interval": _interval(interval),
            "durable_recoveries": held.as_json(self.durable or held.tally([])),
        }
        if holdout is not None:
            out.update(_lift(self, holdout, rng))
        return out


def _lift(arm: CurrencyFigures, base: CurrencyFigures, rng: random.Random) -> dict[str, Any]:
    points: Interval | None = None
    money: Interval | None = None
    lift = money_lift = None
    if arm.finished and base.finished:
        lift = round(
            arm.finished_recovered / arm.finished - base.finished_recovered / base.finished, 4
        )
        points = newcombe(
            arm.finished_recovered, arm.finished, base.finished_recovered, base.finished
        )
        money_lift = round(
            sum(arm.finished_amounts) / arm.finished - sum(base.finished_amounts) / base.finished, 2
        )
        money = bootstrap_mean_difference(
            arm.finished_amounts, base.finished_amounts, rng, resamples=RESAMPLES
        )
    return {
        "lift_points": lift,
        "lift_points_interval": _interval(points),
        "lift_money_per_case": money_lift,
        "lift_money_interval": _interval(money),
        "verdict": verdict(points).value,
    }


def _dunning_arms(
    session: Session, experiment: Experiment, rules: Rules, now: datetime
) -> dict[str, dict[str, CurrencyFigures]]:
    finished_before = now - timedelta(days=rules.retry.window_days)
    rows = session.execute(
        select(
            ExperimentSubject.arm,
            RecoveryCase.currency,
            RecoveryCase.status,
            RecoveryCase.amount_due,
            RecoveryCase.amount_recovered,
            RecoveryCase.opened_at,
        )
        .join(RecoveryCase, RecoveryCase.id == ExperimentSubject.case_id)
        .where(ExperimentSubject.experiment_key == experiment.key)
        .order_by(RecoveryCase.id)
    ).all()
    arms: dict[str, dict[str, CurrencyFigures]] = defaultdict(dict)
    for arm, currency, status, due, recovered_amount, opened_at in rows:
        figures = arms[str(arm)].setdefault(currency, CurrencyFigures(currency))
        won = status == CaseStatus.RECOVERED.value
        figures.cases += 1
        figures.failed_amount += int(due)
        if won:
            figures.recovered_count += 1
            figures.recovered_amount += int(recovered_amount or 0)
        if opened_at <= finished_before:
            figures.finished += 1
            figures.finished_recovered += int(won)
            figures.finished_amounts.append(int(recovered_amount or 0) if won else 0)
    in_experiment = select(ExperimentSubject.case_id).where(
        ExperimentSubject.experiment_key == experiment.key
    )
    _, candidates, invoices = held.read(session, None, [RecoveryCase.id.in_(in_experiment)])
    where = {
        str(case_id): (str(arm), str(currency))
        for case_id, arm, currency in session.execute(
            select(RecoveryCase.id, ExperimentSubject.arm, RecoveryCase.currency)
            .join(ExperimentSubject, ExperimentSubject.case_id == RecoveryCase.id)
            .where(ExperimentSubject.experiment_key == experiment.key)
            .where(RecoveryCase.status == CaseStatus.RECOVERED.value)
        ).all()
    }
    per_place: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for key, result in held.outcomes(candidates, invoices, now).items():
        if key in where:
            per_place[where[key]].append(result)
    for (arm_name, currency), results_at in per_place.items():
        if currency in arms.get(arm_name, {}):
            arms[arm_name][currency].durable = held.tally(results_at)
    return arms


@dataclass
class CancelFigures:
    sessions: int = 0
    saves: int = 0  # kept: not cancelled since
    saves_reversed: int = 0
    cancels: int = 0
    validated: tuple[HeldCounts, ...] = ()

    @property
    def decided(self) -> int:
        return self.saves + self.saves_reversed + self.cancels


def _cancel_arms(
    session: Session, experiment: Experiment, now: datetime
) -> dict[str, CancelFigures]:
    # One row per session first: PostgreSQL groups by a column, not by a repeated subquery.
    per_session = (
        select(
            ExperimentSubject.arm.label("arm"),
            CancelSession.outcome.label("outcome"),
            case((is_reversed(), 1), else_=0).label("reversed"),
        )
        .join(CancelSession, CancelSession.id == ExperimentSubject.cancel_session_id)
        .where(ExperimentSubject.experiment_key == experiment.key)
        .subquery()
    )
    rows = session.execute(
        select(
            per_session.c.arm, per_session.c.outcome, per_session.c.reversed, func.count()
        ).group_by(per_session.c.arm, per_session.c.outcome, per_session.c.reversed)
    ).all()
    arms: dict[str, CancelFigures] = defaultdict(CancelFigures)
    for arm, outcome, was_reversed, n in rows:
        figures = arms[str(arm)]
        figures.sessions += int(n)
        if outcome in SAVED_OUTCOMES:
            if was_reversed:
                figures.saves_reversed += int(n)
            else:
                figures.saves += int(n)
        elif outcome == "cancelled":
            figures.cancels += int(n)
    in_experiment = select(ExperimentSubject.cancel_session_id).where(
        ExperimentSubject.experiment_key == experiment.key
    )
    candidates, _, invoices = held.read(session, [CancelSession.id.in_(in_experiment)], None)
    arm_of = dict(
        session.execute(
            select(ExperimentSubject.cancel_session_id, ExperimentSubject.arm).where(
                ExperimentSubject.experiment_key == experiment.key,
                ExperimentSubject.cancel_session_id.in_([c.key for c in candidates] or [""]),
            )
        ).all()
    )
    outcomes = held.outcomes(candidates, invoices, now)
    per_arm: dict[str, list[Any]] = defaultdict(list)
    for key, result in outcomes.items():
        per_arm[str(arm_of.get(key))].append(result)
    for arm, figures in arms.items():
        figures.validated = held.tally(per_arm.get(arm, []))
    return arms


def _cancel_json(figures: CancelFigures, holdout: CancelFigures | None) -> dict[str, Any]:
    rate, interval = _rate(figures.saves, figures.decided)
    out: dict[str, Any] = {
        "sessions": figures.sessions,
        "saves": figures.saves,
        "saves_reversed": figures.saves_reversed,
        "validated_saves": held.as_json(figures.validated or held.tally([])),
        "cancels": figures.cancels,
        "save_rate": rate,
        "save_rate_interval": _interval(interval),
    }
    if holdout is not None:
        lift = points = None
        if figures.decided and holdout.decided:
            lift = round(figures.saves / figures.decided - holdout.saves / holdout.decided, 4)
            points = newcombe(figures.saves, figures.decided, holdout.saves, holdout.decided)
        out.update(
            {
                "lift_points": lift,
                "lift_points_interval": _interval(points),
                "verdict": verdict(points).value,
            }
        )
    return out


def experiment_results(
    session: Session, experiment: Experiment, rules: Rules, now: datetime
) -> dict[str, Any]:
    customers = dict(
        session.execute(
            select(ExperimentAssignment.arm, func.count())
            .where(ExperimentAssignment.experiment_key == experiment.key)
            .group_by(ExperimentAssignment.arm)
        ).all()
    )
    # No holdout share, no holdout row; an arm since removed from the rules keeps its row.
    names = [HOLDOUT] if experiment.holdout > 0 else []
    names += [a.name for a in experiment.arms]
    names += sorted(set(customers) - set(names) - {HOLDOUT})
    shares = shares_now(session, experiment).as_dict()
    rng = random.Random(experiment.key)  # the same page twice shows the same intervals
    arms: list[dict[str, Any]] = []
    dunning = (
        _dunning_arms(session, experiment, rules, now) if experiment.applies_to == "dunning" else {}
    )
    flows = _cancel_arms(session, experiment, now) if experiment.applies_to == "cancel_flow" else {}
    for name in names:
        row: dict[str, Any] = {
            "name": name,
            "holdout": name == HOLDOUT,
            "share": shares.get(name),
            "customers": int(customers.get(name, 0)),
        }
        compare = experiment.holdout > 0 and name != HOLDOUT
        if experiment.applies_to == "dunning":
            base = dunning.get(HOLDOUT, {})
            row["currencies"] = [
                f.as_json(base.get(c, CurrencyFigures(c)) if compare else None, rng)
                for c, f in sorted(dunning.get(name, {}).items())
            ]
        else:
            base_flow = flows.get(HOLDOUT, CancelFigures())
            row.update(
                _cancel_json(flows.get(name, CancelFigures()), base_flow if compare else None)
            )
        arms.append(row)
    routing_rows = session.execute(
        select(ExperimentRouting.at, ExperimentRouting.shares, ExperimentRouting.posteriors)
        .where(ExperimentRouting.experiment_key == experiment.key)
        .order_by(ExperimentRouting.at.desc(), ExperimentRouting.id.desc())
        .limit(ROUTING_LOG)
    ).all()
    return {
        "key": experiment.key,
        "applies_to": experiment.applies_to,
        "active": experiment.active,
        "routing": experiment.routing,
        "holdout": experiment.holdout,
        "min_share": experiment.min_share if experiment.routing == "thompson" else None,
        "arms": arms,
        "routing_log": [
            {"at": at.isoformat(), "shares": s, "posteriors": p.get("posteriors", [])}
            for at, s, p in routing_rows
        ],
    }


def all_results(rt: Runtime) -> list[dict[str, Any]]:
    """Every experiment in the rules (ended ones too), in file order, read in one transaction."""
    now = rt.clock.now()
    with rt.db.reading() as session:
        return [
            experiment_results(session, e, rt.rules, now) for e in rt.rules.experiments.experiments
        ]
