"""How the worker records what its call pool finished (ActionRunner._gather): in few rounds when
providers answer at once, and never held back by a call that does not answer."""

from __future__ import annotations

import hashlib
import threading
from datetime import timedelta

from sqlalchemy import select

from recovery.adapters.deadline import Deadline
from recovery.models import ActionStatus, DueAction
from recovery.runtime import ActionContext, Claimed, Providers, Runtime, ThreePhase
from recovery.services.work import due_actions

CALL = "test.rounds"


def _drain(
    runtime: Runtime, steps: ThreePhase, count: int, threads: int
) -> due_actions.ActionRunner:
    """`count` due actions of `steps`, one per subject, drained by one loop of `threads`
    threads claiming half of them at a time (all of them for a small count)."""
    runtime.handlers = runtime.handlers.with_action(CALL, steps)
    now = runtime.clock.now()
    with runtime.db.transaction() as s:
        for n in range(count):
            due_actions.schedule(
                s,
                kind=CALL,
                subject=f"case:{n}",
                dedupe_key=f"case:{n}/0",
                due_at=now - timedelta(seconds=count - n),
                now=now,
            )
    batch = max(count // 2, 10)
    runner = due_actions.ActionRunner(runtime, "w1", threads=threads, batch_size=batch, loops=1)
    try:
        assert runner.drain() == count
    finally:
        runner.close()
    return runner


def _decide(ctx: ActionContext, action: Claimed) -> str:
    return action.dedupe_key


def _call_with_client_work(providers: Providers, plan: str, deadline: Deadline) -> str:
    """A provider that answers within a millisecond (a local mail relay): a call's thread
    lets the others run meanwhile, as it does waiting on a socket (hashlib releases the GIL
    on large inputs), so the pool's calls finish one after another."""
    hashlib.sha256(_PAYLOAD).digest()
    return plan


_PAYLOAD = b"x" * 1_000_000


def test_calls_that_answer_at_once_are_recorded_in_a_few_rounds_not_one_each(
    runtime: Runtime,
) -> None:
    """Each round is a transaction with its claim; recording every call as it finished made
    rounds of one or two when the provider answers in a millisecond."""
    rounds: list[int] = []  # actions recorded per round (transaction)

    def record(ctx: ActionContext, action: Claimed, plan: str, outcome: str) -> None:
        if ctx.session.info.get("test.round") is None:
            ctx.session.info["test.round"] = len(rounds)
            rounds.append(0)
        rounds[ctx.session.info["test.round"]] += 1

    steps = ThreePhase(decide=_decide, call=_call_with_client_work, record=record)
    runner = _drain(runtime, steps, 120, threads=4)

    assert runner.statuses == {"done": 120}
    assert sum(rounds) == 120
    # Two claims of 60, each recorded once at most four calls are left in flight: 2-5 rounds
    # here (a thread held up by the machine for GATHER_FOR may add one); 9-23 when each round
    # took what had finished when the first call did.
    assert len(rounds) <= 8, rounds


def test_a_call_that_does_not_answer_does_not_hold_back_the_others_records(
    runtime: Runtime,
) -> None:
    """The hung call waits for the others to be recorded: it is released only if their round
    came while it was still in flight (a gather that waited for every call would leave it
    hanging until its own wait ran out, and the others unrecorded meanwhile)."""
    others_recorded = threading.Event()
    recorded: set[str] = set()
    released: list[bool] = []

    def call(providers: Providers, plan: str, deadline: Deadline) -> str:
        if plan == "case:0/0":
            released.append(others_recorded.wait(timeout=10))
        return plan

    def record(ctx: ActionContext, action: Claimed, plan: str, outcome: str) -> None:
        recorded.add(plan)
        if len(recorded - {"case:0/0"}) == 9:
            others_recorded.set()

    runner = _drain(runtime, ThreePhase(decide=_decide, call=call, record=record), 10, threads=3)

    assert released == [True]
    assert runner.statuses == {"done": 10}
    with runtime.db.transaction() as s:
        assert set(s.scalars(select(DueAction.status))) == {ActionStatus.DONE}
