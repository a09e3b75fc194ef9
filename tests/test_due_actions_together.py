"""A round's actions decided and recorded together (`ThreePhase.decide_many`, `RecordTogether`):
the same outcomes as one by one, a taken-over lease still refuses the record, and a failure
falls back to one by one so it stays with its own action."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from recovery.models import ActionStatus, DueAction
from recovery.runtime import ActionContext, Claimed, RecordTogether, Runtime, ThreePhase
from recovery.services.work import due_actions, steps

KIND = "test.together"
OWNER = "worker-a"


def _handler(
    recorded: list[str],
    together: list[list[str]],
    *,
    fail_together: bool = False,
    decide_many: Any = None,
    decide: Any = None,
) -> ThreePhase[str, str]:
    def record(ctx: ActionContext, action: Claimed, plan: str, outcome: str) -> None:
        recorded.append(plan)

    def record_many(ctx: ActionContext, items: Sequence[tuple[Claimed, str, str]]) -> None:
        if fail_together:
            raise RuntimeError("set-based write failed")
        together.append([plan for _, plan, _ in items])

    return ThreePhase(
        decide=decide or (lambda ctx, action: action.dedupe_key),
        call=lambda providers, plan, deadline: "sent",
        record=record,
        together=RecordTogether(applies=lambda outcome: outcome == "sent", record=record_many),
        decide_many=decide_many,
    )


def _claimed(runtime: Runtime, keys: Sequence[str]) -> list[Claimed]:
    now = runtime.clock.now()
    with runtime.db.transaction() as s:
        for key in keys:
            due_actions.schedule(
                s, kind=KIND, subject=f"case:{key}", dedupe_key=key, due_at=now, now=now
            )
    return due_actions.claim(runtime.db, OWNER, now)


def _statuses(runtime: Runtime) -> dict[str, str]:
    with runtime.db.transaction() as s:
        rows = s.execute(select(DueAction.dedupe_key, DueAction.status, DueAction.lease_owner))
        return {key: f"{status}:{owner}" for key, status, owner in rows}


def _decide_and_call(runtime: Runtime, actions: Sequence[Claimed]) -> list[steps.Called]:
    with runtime.db.transaction() as s:
        decided = steps.decide_all(runtime, s, actions, OWNER)
    return [steps.call(runtime, d) for d in decided if isinstance(d, steps.Decided)]


def test_outcomes_recorded_together_but_not_for_an_action_another_worker_took_over(
    runtime: Runtime,
) -> None:
    recorded: list[str] = []
    together: list[list[str]] = []
    runtime.handlers = runtime.handlers.with_action(KIND, _handler(recorded, together))
    calls = _decide_and_call(runtime, _claimed(runtime, ["a", "b", "c"]))
    with runtime.db.transaction() as s:  # b's lease ran out and worker-b took it over
        s.execute(update(DueAction).where(DueAction.dedupe_key == "b").values(lease_owner="w-b"))

    with runtime.db.transaction() as s:
        statuses = steps.record_all(runtime, s, calls, OWNER)

    assert sorted(statuses) == ["done", "done", "lease_lost"]
    assert together == [["a", "c"]] and recorded == []
    assert _statuses(runtime) == {"a": "done:worker-a", "b": "running:w-b", "c": "done:worker-a"}


def test_a_failing_set_based_record_falls_back_to_one_by_one(runtime: Runtime) -> None:
    recorded: list[str] = []
    together: list[list[str]] = []
    handler = _handler(recorded, together, fail_together=True)
    runtime.handlers = runtime.handlers.with_action(KIND, handler)
    calls = _decide_and_call(runtime, _claimed(runtime, ["a", "b"]))

    with runtime.db.transaction() as s:
        statuses = steps.record_all(runtime, s, calls, OWNER)

    assert statuses == ["done", "done"]
    assert together == [] and sorted(recorded) == ["a", "b"]
    assert set(_statuses(runtime).values()) == {"done:worker-a"}


def test_deciding_together_completes_those_with_nothing_to_call_in_one_go(
    runtime: Runtime,
) -> None:
    def decide_many(ctx: ActionContext, actions: Sequence[Claimed]) -> list[str | None]:
        return [None if a.dedupe_key == "b" else a.dedupe_key for a in actions]

    runtime.handlers = runtime.handlers.with_action(KIND, _handler([], [], decide_many=decide_many))
    actions = _claimed(runtime, ["a", "b", "c"])
    with runtime.db.transaction() as s:
        results = steps.decide_all(runtime, s, actions, OWNER)

    assert [r if isinstance(r, str) else r.plan for r in results] == ["a", "done", "c"]
    assert _statuses(runtime)["b"] == "done:worker-a"
    assert _statuses(runtime)["a"] == "running:worker-a"


def test_a_failure_deciding_together_stays_with_its_own_action(runtime: Runtime) -> None:
    def decide_many(ctx: ActionContext, actions: Sequence[Claimed]) -> list[str | None]:
        raise RuntimeError("one of them is bad")

    def decide(ctx: ActionContext, action: Claimed) -> str:
        if action.dedupe_key == "b":
            raise RuntimeError("b is bad")
        return action.dedupe_key

    runtime.handlers = runtime.handlers.with_action(
        KIND, _handler([], [], decide_many=decide_many, decide=decide)
    )
    actions = _claimed(runtime, ["a", "b", "c"])
    with runtime.db.transaction() as s:
        results = steps.decide_all(runtime, s, actions, OWNER)

    assert [r if isinstance(r, str) else r.plan for r in results] == ["a", "pending", "c"]
    with runtime.db.transaction() as s:
        b = s.scalars(select(DueAction).where(DueAction.dedupe_key == "b")).one()
        assert (b.status, b.lease_owner, b.last_error) == (
            ActionStatus.PENDING,
            None,
            "RuntimeError: b is bad",
        )


def test_the_worker_sends_a_rounds_messages_with_the_same_outcome_as_one_by_one(
    runtime: Runtime,
) -> None:
    """The whole loop: everything done after one attempt, each outcome recorded once."""
    recorded: list[str] = []
    together: list[list[str]] = []
    runtime.handlers = runtime.handlers.with_action(KIND, _handler(recorded, together))
    _claimed(runtime, [])  # nothing claimed yet: the runner claims
    now = runtime.clock.now()
    with runtime.db.transaction() as s:
        for key in ("a", "b", "c", "d"):
            due_actions.schedule(
                s, kind=KIND, subject=f"case:{key}", dedupe_key=key, due_at=now, now=now
            )
    runner = due_actions.ActionRunner(runtime, OWNER, threads=1)
    assert runner.drain() == 4
    assert sorted(plan for group in together for plan in group) == ["a", "b", "c", "d"]
    assert recorded == []
    assert runner.statuses == {"done": 4}
    assert set(_statuses(runtime).values()) == {"done:worker-a"}


def test_outcomes_recorded_in_one_savepoint_a_failing_one_fails_alone(runtime: Runtime) -> None:
    """Outcomes no `RecordTogether` takes are recorded in one savepoint; when one of them
    fails, all go one by one: the others are recorded, the failing one is retried later."""

    def record(ctx: ActionContext, action: Claimed, plan: str, outcome: str) -> None:
        now = ctx.clock.now()
        due_actions.schedule(  # what a record writes: a follow-up, due later
            ctx.session,
            kind="test.later",
            subject=action.subject,
            dedupe_key=f"{plan}:follow-up",
            due_at=now + timedelta(days=1),
            now=now,
        )
        if plan == "b":
            raise RuntimeError("b cannot be recorded")

    handler: ThreePhase[str, str] = ThreePhase(
        decide=lambda ctx, action: action.dedupe_key,
        call=lambda providers, plan, deadline: "declined",
        record=record,
    )
    runtime.handlers = runtime.handlers.with_action(KIND, handler)
    calls = _decide_and_call(runtime, _claimed(runtime, ["a", "b", "c"]))

    with runtime.db.transaction() as s:
        statuses = steps.record_all(runtime, s, calls, OWNER)

    assert sorted(statuses) == ["done", "done", "pending"]
    assert _statuses(runtime) == {
        "a": "done:worker-a",
        "a:follow-up": "pending:None",
        "b": "pending:None",  # retried later; what its record began is not kept
        "c": "done:worker-a",
        "c:follow-up": "pending:None",
    }
