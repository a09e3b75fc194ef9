"""Several claim/decide/record loops in one worker process (RECOVERY_WORKER_LOOPS): on
PostgreSQL they split the due actions by subject and run at once, each action once and a
subject's actions in due order on one loop; SQLite (one writer) keeps one loop."""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from recovery.adapters.deadline import Deadline
from recovery.config import ConfigError, Settings
from recovery.models import ActionStatus, DueAction
from recovery.runtime import ActionContext, Claimed, Providers, Runtime, ThreePhase
from recovery.services.work import due_actions

CALL = "test.loops"
SUBJECTS, PER_SUBJECT = 24, 3


def test_loops_split_the_work_by_subject_and_run_each_action_once_in_due_order(
    runtime: Runtime,
) -> None:
    lock = threading.Lock()
    decided_on: dict[str, set[str]] = defaultdict(set)  # subject -> loop threads that decided
    called: dict[str, list[str]] = defaultdict(list)  # subject -> dedupe keys, in call order
    active: set[str] = set()
    overlaps: list[str] = []

    def decide(ctx: ActionContext, action: Claimed) -> str:
        with lock:
            decided_on[action.subject].add(threading.current_thread().name)
        return action.dedupe_key

    def call(providers: Providers, plan: str, deadline: Deadline) -> str:
        subject = plan.split("/")[0]
        with lock:
            if subject in active:
                overlaps.append(plan)
            active.add(subject)
            called[subject].append(plan)
        with lock:
            active.discard(subject)
        return plan

    def record(ctx: ActionContext, action: Claimed, plan: str, outcome: str) -> None:
        pass

    runtime.handlers = runtime.handlers.with_action(
        CALL, ThreePhase(decide=decide, call=call, record=record)
    )
    now = runtime.clock.now()
    with runtime.db.transaction() as s:
        for step in range(PER_SUBJECT):  # due in step order, subjects interleaved
            for n in range(SUBJECTS):
                due_actions.schedule(
                    s,
                    kind=CALL,
                    subject=f"case:{n}",
                    dedupe_key=f"case:{n}/{step}",
                    due_at=now - timedelta(minutes=PER_SUBJECT - step, seconds=n),
                    now=now,
                )
    # Small batches: without lanes the loops would claim a subject's later steps at once.
    runner = due_actions.ActionRunner(runtime, "w1", threads=4, batch_size=6, loops=3)
    try:
        assert runner.drain() == SUBJECTS * PER_SUBJECT
    finally:
        runner.close()

    assert runner.loops == (3 if runtime.db.is_postgres else 1)
    assert runner.statuses == {"done": SUBJECTS * PER_SUBJECT}
    with runtime.db.transaction() as s:
        rows = s.execute(select(DueAction.status, DueAction.attempts)).all()
    assert {(str(status), attempts) for status, attempts in rows} == {(ActionStatus.DONE, 1)}
    assert overlaps == []
    for n in range(SUBJECTS):
        subject = f"case:{n}"
        assert called[subject] == [f"{subject}/{step}" for step in range(PER_SUBJECT)]
        assert len(decided_on[subject]) == 1  # one loop holds a subject
    lanes = set().union(*decided_on.values())
    assert len(lanes) == (3 if runtime.db.is_postgres else 1)


@pytest.mark.parametrize("value", ["0", "9", "two"])
def test_a_bad_number_of_loops_stops_start_up_with_its_name(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="RECOVERY_WORKER_LOOPS"):
        Settings.from_env({"RECOVERY_WORKER_LOOPS": value}, instance_path=tmp_path)


def test_loops_default_to_two(tmp_path: Path) -> None:
    assert Settings.from_env({}, instance_path=tmp_path).worker_loops == 2
