"""Placing customers in experiments: when a recovery case opens or a cancel session starts, the
active experiment of that kind gives the customer an arm (the first one ever recorded for them
in that experiment, else the arm at their point under today's shares), and the case or session
is recorded under it. What acts on a case reads its placement once (`placement_of_case`) and
branches on it; the arms' effects themselves are pure (`recovery.domain.experiments`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from recovery.db import insert_or_ignore
from recovery.domain.experiments import Experiment, Placement, Shares, placement
from recovery.models import ExperimentAssignment, ExperimentRouting, ExperimentSubject
from recovery.rules import Rules


def shares_now(session: Session, experiment: Experiment) -> Shares:
    """The shares new customers are assigned under: the latest reassignment of a Thompson
    experiment (`routing.reroute`), else the fixed shares. The holdout's share is always the
    rules' own: routing never moves it."""
    fixed = experiment.fixed_shares()
    if experiment.routing != "thompson":
        return fixed
    latest = session.scalar(
        select(ExperimentRouting.shares)
        .where(ExperimentRouting.experiment_key == experiment.key)
        .order_by(ExperimentRouting.at.desc(), ExperimentRouting.id.desc())
        .limit(1)
    )
    if not latest:
        return fixed
    arms = tuple(
        (a.name, float(latest.get(a.name, share)))
        for a, (_n, share) in zip(experiment.arms, fixed.arms, strict=True)
    )
    return Shares(experiment.holdout, arms)


def arm_of_customer(session: Session, experiment_key: str, customer_id: str) -> str | None:
    arm = session.scalar(
        select(ExperimentAssignment.arm).where(
            ExperimentAssignment.experiment_key == experiment_key,
            ExperimentAssignment.customer_id == customer_id,
        )
    )
    return str(arm) if arm is not None else None


def place(
    session: Session,
    experiment: Experiment,
    customer_id: str,
    now: datetime,
    *,
    case_id: int | None = None,
    cancel_session_id: str | None = None,
) -> Placement:
    """The customer's arm in `experiment` (recorded now if they have none), and the case or
    cancel session recorded under it. Idempotent: a second call for the same case or session
    changes nothing."""
    subject = f"case:{case_id}" if case_id is not None else f"cancel_session:{cancel_session_id}"
    if case_id is not None:
        _placements(session).pop(case_id, None)  # read again once written
    arm = arm_of_customer(session, experiment.key, customer_id)
    if arm is None:
        chosen = experiment.assign(customer_id, shares_now(session, experiment))
        values = {
            "experiment_key": experiment.key,
            "arm": chosen,
            "customer_id": customer_id,
            "subject": subject,
            "assigned_at": now,
        }
        if insert_or_ignore(
            session, ExperimentAssignment, values, ["experiment_key", "customer_id"]
        ):
            arm = chosen
        else:  # another transaction placed them first: theirs is the arm
            arm = arm_of_customer(session, experiment.key, customer_id) or chosen
    insert_or_ignore(
        session,
        ExperimentSubject,
        {
            "experiment_key": experiment.key,
            "arm": arm,
            "customer_id": customer_id,
            "case_id": case_id,
            "cancel_session_id": cancel_session_id,
            "assigned_at": now,
        },
        ["case_id"] if case_id is not None else ["cancel_session_id"],
    )
    return placement(experiment, arm)


def place_case(
    session: Session, rules: Rules, case_id: int, customer_id: str | None, now: datetime
) -> Placement | None:
    """A newly opened case in the active dunning experiment, if there is one."""
    experiment = rules.experiments.active("dunning")
    if experiment is None or not customer_id:
        return None
    return place(session, experiment, customer_id, now, case_id=case_id)


def _placed(rules: Rules, key: str, arm: str) -> Placement:
    experiment = rules.experiments.get(key)
    # An experiment since removed from the rules: its holdout stays left alone, its arms act as
    # the service does by default.
    return placement(experiment, arm) if experiment else Placement(key, arm, None)


# A case's placement, remembered for the unit of work that read it: the retry decision, the
# case's scheduling and the reminders planner each ask for it while one event is processed.
# Valid only while the innermost transaction (or savepoint) that read it is the current one:
# a savepoint rolled back, a commit or a new savepoint starts over with a fresh read, so a
# placement written and then rolled back is never remembered; `place` forgets the case.
_PLACEMENTS = "recovery.placements_of_cases"
_UNREAD = object()


def _placements(session: Session) -> dict[int, object]:
    current = session.get_nested_transaction() or session.get_transaction()
    held = session.info.get(_PLACEMENTS)
    if held is None or held[0] is not current:
        held = (current, {})
        session.info[_PLACEMENTS] = held
    cache: dict[int, object] = held[1]
    return cache


def remember_placement(session: Session, case_id: int, key: str | None, arm: str | None) -> None:
    """The case's placement as a caller read it (None: in no experiment), for this unit of work:
    the retry decision reads it with its other facts (services/cases/evidence.py)."""
    _placements(session)[case_id] = (key, arm) if key is not None and arm is not None else None


def placement_of_case(session: Session, rules: Rules, case_id: int) -> Placement | None:
    """The case's experiment and arm, or None when it is in none."""
    cache = _placements(session)
    found = cache.get(case_id, _UNREAD)
    if found is _UNREAD:
        row = session.execute(
            select(ExperimentSubject.experiment_key, ExperimentSubject.arm).where(
                ExperimentSubject.case_id == case_id
            )
        ).first()
        found = cache[case_id] = (str(row[0]), str(row[1])) if row else None
    if found is None:
        return None
    key, arm = cast(tuple[str, str], found)
    return _placed(rules, key, arm)  # from the rules given: the cache holds the rows only


def placement_of_cancel_session(
    session: Session, rules: Rules, session_id: str
) -> Placement | None:
    row = session.execute(
        select(ExperimentSubject.experiment_key, ExperimentSubject.arm).where(
            ExperimentSubject.cancel_session_id == session_id
        )
    ).first()
    return _placed(rules, str(row[0]), str(row[1])) if row else None


def experiment_of(
    session: Session, *, case_id: int | None = None, cancel_session_id: str | None = None
) -> dict[str, str] | None:
    """`{"key", "arm"}` of a case or cancel session in an experiment, for the API; else None."""
    where = (
        ExperimentSubject.case_id == case_id
        if case_id is not None
        else ExperimentSubject.cancel_session_id == cancel_session_id
    )
    row = session.execute(
        select(ExperimentSubject.experiment_key, ExperimentSubject.arm).where(where)
    ).first()
    return {"key": str(row[0]), "arm": str(row[1])} if row else None


def read_placements(session: Session, ids: Sequence[int]) -> None:
    """The cases' experiment placements in one statement, remembered for `placement_of_case`."""
    if not ids:
        return
    found = {row[0]: (row[1], row[2]) for row in session.execute(_PLACED, {"ids": list(ids)})}
    for case_id in ids:
        remember_placement(session, case_id, *found.get(case_id, (None, None)))


_PLACED = select(
    ExperimentSubject.case_id, ExperimentSubject.experiment_key, ExperimentSubject.arm
).where(ExperimentSubject.case_id.in_(bindparam("ids", expanding=True)))
