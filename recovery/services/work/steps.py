"""The three steps of a due action, each on its own: decide (in the claim's transaction, a
savepoint per action), call (no transaction open, under a deadline well inside the lease),
record (in a later transaction, committed only while the lease is still ours).

A round's common outcomes (`RecordTogether`: a message sent, a charge paid or declined) are
recorded together: one statement marks all their actions done while checking the leases, one
statement per table writes their rows. The rest, and any group whose set-based write fails, go
one by one, each in a savepoint.

In shadow mode (RECOVERY_MODE=shadow) a three-step action that decided to call a provider is
finished as `shadow` with a note of what it would have done (`services.work.shadow`), and
nothing is called; a shadow action is finished for good and never claimed again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from recovery.adapters.deadline import Deadline
from recovery.models import ActionStatus
from recovery.runtime import Claimed, RecordTogether, Runtime, ThreePhase
from recovery.services.work import shadow
from recovery.services.work.claims import (
    DATABASE_GONE,
    LeaseLost,
    PermanentError,
    complete,
    complete_many,
    fail,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decided:
    """A three-phase action between its decision and its record: what to call."""

    action: Claimed
    handler: ThreePhase[Any, Any]
    plan: Any


@dataclass(frozen=True)
class Called:
    decided: Decided
    outcome: Any = None
    error: Exception | None = None


def _in_shadow(runtime: Runtime, action: Claimed) -> bool:
    """Shadow mode, and an action that would change something outside (not a mere read)."""
    return runtime.settings.is_shadow and action.kind not in shadow.READS_ONLY


def decide(runtime: Runtime, session: Session, action: Claimed, owner: str) -> str | Decided:
    """Step 1, in the caller's transaction and a savepoint of its own: a one-phase handler
    runs whole and completes; a three-phase one decides what to call (or completes when there
    is nothing to call). Returns the action's status, or what to call."""
    handler = runtime.handlers.actions.get(action.kind)
    now = runtime.clock.now()
    try:
        with session.begin_nested():
            if handler is None:
                raise PermanentError(f"no handler for action kind {action.kind!r}")
            ctx = runtime.action_context(session, owner)
            if isinstance(handler, ThreePhase):
                plan = handler.decide(ctx, action)
                if plan is not None and _in_shadow(runtime, action):
                    shadow.hold(session, action, owner, plan, now)
                    return ActionStatus.SHADOW
                if plan is not None:
                    return Decided(action, handler, plan)
            else:
                handler(ctx, action)
            complete(session, action, owner, now)
        return ActionStatus.DONE
    except (LeaseLost, shadow.ShadowLeaseLost):
        log.warning("lease lost on action %s; another worker owns it", action.id)
        return "lease_lost"
    except DATABASE_GONE:
        raise
    except Exception as exc:
        return fail(session, action, owner, exc, now)


def decide_all(
    runtime: Runtime, session: Session, actions: Sequence[Claimed], owner: str
) -> list[str | Decided]:
    """Step 1 for a round's actions, whose leases the caller knows are held: those of a kind
    that decides together (`ThreePhase.decide_many`: its rows read in one query per table) in
    one savepoint per kind, the rest one by one. Results in the order of `actions`."""
    results: dict[int, str | Decided] = {}
    groups: dict[str, list[Claimed]] = {}
    for action in actions:
        handler = runtime.handlers.actions.get(action.kind)
        # Shadow mode holds each plan on its own (`shadow.hold`): one by one there.
        if (
            isinstance(handler, ThreePhase)
            and handler.decide_many
            and not runtime.settings.is_shadow
        ):
            groups.setdefault(action.kind, []).append(action)
    for kind, group in groups.items():
        handler = runtime.handlers.actions[kind]
        assert isinstance(handler, ThreePhase)
        together = _decide_together(runtime, session, handler, group, owner)
        fresh_for_the_next(session)
        results.update(together or {})
    for action in actions:
        if action.id not in results:
            results[action.id] = decide(runtime, session, action, owner)
            fresh_for_the_next(session)
    return [results[action.id] for action in actions]


def _decide_together(
    runtime: Runtime,
    session: Session,
    handler: ThreePhase[Any, Any],
    group: Sequence[Claimed],
    owner: str,
) -> dict[int, str | Decided] | None:
    """None when any of them failed: they are then decided one by one, so a failure stays
    with its own action (and its attempts and backoff)."""
    assert handler.decide_many is not None
    now = runtime.clock.now()
    try:
        with session.begin_nested():
            plans = handler.decide_many(runtime.action_context(session, owner), group)
            nothing = [a.id for a, plan in zip(group, plans, strict=True) if plan is None]
            if len(complete_many(session, nothing, owner, now)) != len(nothing):
                raise LeaseLost("taken over while deciding")
    except DATABASE_GONE:
        raise
    except Exception:
        log.exception("deciding %d %s actions together failed", len(group), group[0].kind)
        return None
    return {
        a.id: ActionStatus.DONE if plan is None else Decided(a, handler, plan)
        for a, plan in zip(group, plans, strict=True)
    }


def call(runtime: Runtime, decided: Decided) -> Called:
    """Step 2, with no transaction open: the provider call, under the deadline."""
    try:
        with Deadline(runtime.settings.provider_deadline_seconds) as deadline:
            outcome = decided.handler.call(runtime.providers, decided.plan, deadline)
        return Called(decided, outcome)
    except Exception as exc:  # recorded as the action's failure in step 3
        return Called(decided, error=exc)


def record(runtime: Runtime, session: Session, called: Called, owner: str) -> str:
    """Step 3, in the caller's transaction and a savepoint: the outcome, committed only while
    the lease is still ours."""
    action = called.decided.action
    now = runtime.clock.now()
    if called.error is not None:
        return fail(session, action, owner, called.error, now)
    try:
        with session.begin_nested():
            ctx = runtime.action_context(session, owner)
            called.decided.handler.record(ctx, action, called.decided.plan, called.outcome)
            complete(session, action, owner, now)
        return ActionStatus.DONE
    except LeaseLost:
        log.warning("lease lost on action %s; another worker owns it", action.id)
        return "lease_lost"
    except DATABASE_GONE:
        raise
    except Exception as exc:
        return fail(session, action, owner, exc, now)


def fresh_for_the_next(session: Session) -> None:
    """Several actions share a transaction: the next starts from what the database holds (the
    mirror is written with plain statements, which loaded objects would not see)."""
    session.flush()
    session.expunge_all()


def record_all(
    runtime: Runtime, session: Session, calls: Sequence[Called], owner: str
) -> list[str]:
    """Step 3 for a round's calls, in the caller's transaction: the outcomes their handlers
    record together first (`RecordTogether`), then the rest one by one. Returns their statuses."""
    groups: dict[int, tuple[RecordTogether[Any, Any], list[Called]]] = {}
    alone: list[Called] = []
    for c in calls:
        together = c.decided.handler.together
        if c.error is None and together is not None and together.applies(c.outcome):
            groups.setdefault(id(together), (together, []))[1].append(c)
        else:
            alone.append(c)
    statuses: list[str] = []
    for together, group in groups.values():
        recorded = _record_together(runtime, session, together, group, owner)
        fresh_for_the_next(session)
        if recorded is None:
            alone += group  # one by one: a failure then stays with its own action
        else:
            statuses += recorded
    answered = [c for c in alone if c.error is None]
    if len(answered) > 1 and _record_in_one_savepoint(runtime, session, answered, owner):
        statuses += [ActionStatus.DONE] * len(answered)
        alone = [c for c in alone if c.error is not None]
    for c in alone:
        statuses.append(record(runtime, session, c, owner))
        fresh_for_the_next(session)
    return statuses


def _record_in_one_savepoint(
    runtime: Runtime, session: Session, calls: Sequence[Called], owner: str
) -> bool:
    """The usual case, a round's outcomes that all record cleanly, without a savepoint and a
    lease check each (three statements an action): one savepoint for them all, their leases
    checked in one statement at the end. False (nothing written) when any of them failed or
    lost its lease: they then go one by one, so the failure stays with its own action."""
    try:
        with session.begin_nested():
            for c in calls:
                ctx = runtime.action_context(session, owner)
                c.decided.handler.record(ctx, c.decided.action, c.decided.plan, c.outcome)
                fresh_for_the_next(session)
            ids = [c.decided.action.id for c in calls]
            if len(complete_many(session, ids, owner, runtime.clock.now())) != len(ids):
                raise LeaseLost("an action was taken over")
    except DATABASE_GONE:
        raise
    except Exception as exc:
        log.info("recording %d outcomes at once failed (%s); one by one", len(calls), exc)
        fresh_for_the_next(session)
        return False
    return True


def _record_together(
    runtime: Runtime,
    session: Session,
    together: RecordTogether[Any, Any],
    group: Sequence[Called],
    owner: str,
) -> list[str] | None:
    now = runtime.clock.now()
    try:
        with session.begin_nested():
            held = complete_many(session, [c.decided.action.id for c in group], owner, now)
            items = [
                (c.decided.action, c.decided.plan, c.outcome)
                for c in group
                if c.decided.action.id in held
            ]
            together.record(runtime.action_context(session, owner), items)
    except DATABASE_GONE:
        raise
    except Exception:
        log.exception("recording %d outcomes together failed; one by one instead", len(group))
        return None
    lost = len(group) - len(items)
    if lost:
        log.warning("lease lost on %d actions; another worker owns them", lost)
    return [ActionStatus.DONE] * len(items) + ["lease_lost"] * lost
