"""PostgreSQL: batches of events and action rounds take turns (db.take_writers_turn).

A batch locks rows in the order its events came, an action round locks cases in id order:
run at once they deadlocked - PostgreSQL noticed after its 1 s `deadlock_timeout` and rolled
one back, with a batch 200 events of work (seen in bench/webhook_ingest.py at 500 events/s).
Now a batch of events runs alone, action rounds side by side."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from recovery.adapters.clock import FrozenClock
from recovery.adapters.stripe_fake import FakeStripeGateway
from recovery.db import take_writers_turn
from recovery.models import EventStatus, RecoveryCase, StripeEvent
from recovery.runtime import Runtime
from recovery.services.events import inbox
from recovery.services.registry import build_runtime
from recovery.services.work import due_actions
from tests.conftest import make_settings
from tests.support import stripe_payloads as sp

pytestmark = pytest.mark.postgres
BATCH = 15


@pytest.fixture
def pg_runtime(postgres_url: str, tmp_path: Path, clock: FrozenClock) -> Iterator[Runtime]:
    from tests.conftest import _truncate_all

    _truncate_all(postgres_url)
    rt = build_runtime(
        make_settings(postgres_url, tmp_path), clock=clock, gateway=FakeStripeGateway()
    )
    yield rt
    rt.db.dispose()
    _truncate_all(postgres_url)


def _waiting_for_a_turn(rt: Runtime) -> int:
    """Sessions waiting for an advisory lock right now."""
    with rt.db.transaction() as s:
        query = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        return int(s.scalar(text(query)) or 0)


def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    return thread, out


def _schedule(rt: Runtime, key: str) -> None:
    now = rt.clock.now()
    with rt.db.transaction() as s:
        due_actions.schedule(s, kind="noop", subject=key, dedupe_key=key, due_at=now, now=now)


def test_an_action_round_waits_while_a_batch_of_events_is_applied(pg_runtime: Runtime) -> None:
    rt = pg_runtime
    _schedule(rt, "case:1")
    with rt.db.transaction() as batch:
        take_writers_turn(batch, exclusive=True)
        round_, claimed = _in_thread(lambda: due_actions.claim(rt.db, "w1", rt.clock.now()))
        _until(lambda: _waiting_for_a_turn(rt) == 1)
        assert round_.is_alive() and not claimed  # nothing claimed while the batch runs
    round_.join(10)
    assert [a.dedupe_key for a in claimed[0]] == ["case:1"]


def test_action_rounds_run_side_by_side(pg_runtime: Runtime) -> None:
    rt = pg_runtime
    _schedule(rt, "case:2")
    with rt.db.transaction() as other_round:
        take_writers_turn(other_round, exclusive=False)
        round_, claimed = _in_thread(lambda: due_actions.claim(rt.db, "w2", rt.clock.now()))
        round_.join(10)
        assert claimed and [a.dedupe_key for a in claimed[0]] == ["case:2"]


def test_a_batch_of_events_waits_for_the_action_round_in_progress(pg_runtime: Runtime) -> None:
    rt = pg_runtime
    now = int(rt.clock.now().timestamp())
    evt = sp.event("customer.created", sp.customer("cus_T1"), now)
    inbox.ingest(rt.db, inbox.parse_event(sp.body_of(evt))[0], sp.body_of(evt), rt.clock.now())
    with rt.db.transaction() as round_:
        take_writers_turn(round_, exclusive=False)
        batch, done = _in_thread(
            lambda: inbox.process_pending(rt.db, rt.processing_context, rt.clock)
        )
        _until(lambda: _waiting_for_a_turn(rt) == 1)
        assert batch.is_alive() and not done
    batch.join(10)
    assert done == [1]


def test_workers_and_action_rounds_on_the_same_customers_all_finish_without_a_deadlock(
    postgres_url: str, tmp_path: Path, clock: FrozenClock
) -> None:
    """Two workers' event batches and a third's action rounds on the same eight customers'
    failing invoices: one batch of events touches them in one order, the next (claimed by the
    other worker at the same time) in the reverse order."""
    from tests.conftest import _truncate_all

    _truncate_all(postgres_url)
    runtimes = [
        build_runtime(
            make_settings(postgres_url, tmp_path), clock=clock, gateway=FakeStripeGateway()
        )
        for _ in range(3)
    ]
    rt = runtimes[0]
    now = int(clock.now().timestamp())
    bodies = []
    for batch_no in range(40):
        order = list(range(8)) if batch_no % 2 == 0 else list(reversed(range(8)))
        for n in range(BATCH):
            i, at = order[n % 8], now + batch_no * BATCH + n
            cid, inv = f"cus_D{i}", f"in_D{i}"
            if n % 2 == 0:
                failing = sp.invoice(inv, cid, f"sub_D{i}", attempt_count=batch_no + 1)
                bodies.append(sp.body_of(sp.event("invoice.payment_failed", failing, at)))
            else:
                charge = sp.failed_charge(f"ch_D{i}_{batch_no}_{n}", cid, None, created=at)
                bodies.append(sp.body_of(sp.event("charge.failed", charge, at)))
    for body in bodies:
        inbox.ingest(rt.db, inbox.parse_event(body)[0], body, clock.now())
    errors: list[BaseException] = []
    stop = threading.Event()

    def events(worker: Runtime) -> None:
        try:
            while inbox.process_pending(worker.db, worker.processing_context, clock, limit=BATCH):
                pass
        except BaseException as exc:
            errors.append(exc)

    def actions(worker: Runtime) -> None:
        runner = due_actions.ActionRunner(worker, "drainer", threads=1)
        try:
            while not stop.is_set():
                runner.drain()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=events, args=(w,)) for w in runtimes[:2]]
    drainer = threading.Thread(target=actions, args=(runtimes[2],))
    for thread in [*threads, drainer]:
        thread.start()
    for thread in threads:
        thread.join(120)
    stop.set()
    drainer.join(120)
    assert not errors, errors
    with rt.db.transaction() as s:
        statuses = s.execute(select(StripeEvent.status, StripeEvent.attempts)).all()
        assert {tuple(row) for row in statuses} == {(EventStatus.PROCESSED, 1)}
        assert len(statuses) == len(bodies)
        assert len(s.scalars(select(RecoveryCase.id)).all()) == 8
    for worker in runtimes:
        worker.db.dispose()
    _truncate_all(postgres_url)
