"""The worker's rounds: what a due action makes due now runs in the same drain, with as few
transactions as the steps allow and none open while a provider is called."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import event, select

from recovery.adapters.clock import FrozenClock
from recovery.adapters.deadline import Deadline
from recovery.models import ActionStatus, DueAction
from recovery.runtime import ActionContext, Claimed, Providers, Runtime, ThreePhase
from recovery.services.work import due_actions
from recovery.worker import Worker

STEP, CALL = "test.step", "test.call"


def _schedule(ctx_session: Any, rt: Runtime, kind: str, subject: str, key: str) -> None:
    now = rt.clock.now()
    due_actions.schedule(
        ctx_session, kind=kind, subject=subject, dedupe_key=key, due_at=now, now=now
    )


def _commits(rt: Runtime) -> list[int]:
    commits: list[int] = []
    event.listen(rt.db.engine, "commit", lambda conn: commits.append(1))
    return commits


def _statuses(rt: Runtime) -> dict[str, str]:
    with rt.db.transaction() as s:
        return {k: str(v) for k, v in s.execute(select(DueAction.dedupe_key, DueAction.status))}


def test_a_chain_of_one_step_actions_runs_in_one_drain_and_one_transaction(
    runtime: Runtime,
) -> None:
    ran: list[str] = []

    def step(ctx: ActionContext, action: Claimed) -> None:
        ran.append(action.dedupe_key)
        following = {"a": "b", "b": "c"}.get(action.dedupe_key)
        if following:  # what a reminder's outcome does: the next thing, due now
            _schedule(ctx.session, ctx.runtime, STEP, f"case:{following}", following)

    runtime.handlers = runtime.handlers.with_action(STEP, step)
    with runtime.db.transaction() as s:
        _schedule(s, runtime, STEP, "case:a", "a")
    commits = _commits(runtime)
    assert Worker(runtime, threads=1).run_due_actions() == 3
    assert ran == ["a", "b", "c"]
    assert len(commits) == 1
    assert set(_statuses(runtime).values()) == {ActionStatus.DONE}


def test_a_call_runs_with_no_transaction_and_its_follow_up_runs_in_the_recording_one(
    runtime: Runtime, clock: FrozenClock
) -> None:
    open_during_call: list[int] = []

    def decide(ctx: ActionContext, action: Claimed) -> str:
        return action.dedupe_key

    def call(providers: Providers, plan: str, deadline: Deadline) -> str:
        open_during_call.append(runtime.db.engine.pool.checkedout())  # type: ignore[attr-defined]
        return f"sent {plan}"

    def record(ctx: ActionContext, action: Claimed, plan: str, outcome: str) -> None:
        _schedule(ctx.session, ctx.runtime, STEP, action.subject, f"{plan}:thanks")

    thanked: list[str] = []
    runtime.handlers = runtime.handlers.with_action(
        CALL, ThreePhase(decide=decide, call=call, record=record)
    ).with_action(STEP, lambda ctx, a: thanked.append(a.dedupe_key))
    with runtime.db.transaction() as s:
        _schedule(s, runtime, CALL, "case:1", "m1")
        _schedule(s, runtime, CALL, "case:2", "m2")
    commits = _commits(runtime)
    assert Worker(runtime, threads=1).run_due_actions() == 4
    assert open_during_call == [0, 0]  # no connection (so no transaction) held by the call
    assert sorted(thanked) == ["m1:thanks", "m2:thanks"]
    # Claim and decide; then record, claim the follow-ups and run them, find nothing more.
    assert len(commits) == 2
    assert set(_statuses(runtime).values()) == {ActionStatus.DONE}
    clock.advance(timedelta(minutes=1))
    assert Worker(runtime, threads=1).run_due_actions() == 0


def test_cancel_pending_of_some_kinds_leaves_the_others(runtime: Runtime) -> None:
    runtime.handlers = runtime.handlers.with_action(STEP, lambda ctx, a: None)
    with runtime.db.transaction() as s:
        _schedule(s, runtime, STEP, "case:1", "step")
        _schedule(s, runtime, CALL, "case:1", "call")
        _schedule(s, runtime, STEP, "case:2", "elsewhere")
    with runtime.db.transaction() as s:
        assert due_actions.cancel_pending(s, "case:1", runtime.clock.now(), (STEP,)) == 1
    assert _statuses(runtime) == {
        "step": ActionStatus.CANCELLED,
        "call": ActionStatus.PENDING,
        "elsewhere": ActionStatus.PENDING,
    }
