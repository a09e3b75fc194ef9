"""A worker process for the concurrency drill: `python -m tests.support.worker_proc URL ID`.

Runs the real claim/run loop against PostgreSQL with a handler that records each run in a
table without a unique key - so a double run would show as a duplicate row, not hide behind a
constraint. Prints one line per claimed batch (the test kills a worker between such lines)
and exits once nothing is pending or running.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta

from sqlalchemy import func, select, text

from recovery.adapters.clock import SystemClock
from recovery.adapters.stripe_fake import FakeStripeGateway
from recovery.config import Settings
from recovery.db import Database
from recovery.models import ActionStatus, DueAction
from recovery.rules import Rules
from recovery.runtime import ActionContext, Claimed, Handlers, Runtime
from recovery.services.work import due_actions

KIND = "drill.record"


def record(ctx: ActionContext, action: Claimed) -> None:
    ctx.session.execute(
        text("INSERT INTO drill_runs (action_id, worker) VALUES (:a, :w)"),
        {"a": action.id, "w": ctx.worker_id},
    )


def main(url: str, worker_id: str, lease_seconds: float, batch: int) -> None:
    db = Database(url, pool_size=2)
    clock = SystemClock()
    runtime = Runtime(
        settings=Settings(database_url=url),
        rules=Rules.load(None),
        db=db,
        gateway=FakeStripeGateway(),
        handlers=Handlers(actions={KIND: record}),
        clock=clock,
    )
    lease = timedelta(seconds=lease_seconds)
    while True:
        claimed = due_actions.claim(db, worker_id, clock.now(), batch, lease)
        print(f"claimed {len(claimed)}", flush=True)
        for action in claimed:
            due_actions.run_claimed(runtime, action, worker_id)
        if claimed:
            continue
        with db.transaction() as session:
            open_count = session.scalar(
                select(func.count())
                .select_from(DueAction)
                .where(DueAction.status.in_([ActionStatus.PENDING, ActionStatus.RUNNING]))
            )
        if not open_count:
            break
        time.sleep(0.05)  # a dead worker's lease has yet to expire
    print("idle", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))
