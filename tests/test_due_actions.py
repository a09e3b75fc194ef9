"""Due actions: once per dedupe key, claimed under a lease, retried with backoff, parked."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select, text

from recovery.adapters.clock import FrozenClock
from recovery.models import ActionStatus, DueAction, JobRun
from recovery.runtime import ActionContext, Claimed, Runtime
from recovery.services.work import due_actions
from recovery.services.work.due_actions import PermanentError
from recovery.worker import Worker

KIND = "test.record"


def schedule(rt: Runtime, key: str, due_in: timedelta = timedelta(0), **kw: Any) -> bool:
    now = rt.clock.now()
    with rt.db.transaction() as s:
        return due_actions.schedule(
            s, kind=KIND, subject="case:1", dedupe_key=key, due_at=now + due_in, now=now, **kw
        )


def status_of(rt: Runtime, key: str) -> DueAction:
    with rt.db.transaction() as s:
        return s.scalars(select(DueAction).where(DueAction.dedupe_key == key)).one()


def test_same_dedupe_key_schedules_once(runtime: Runtime) -> None:
    assert schedule(runtime, "case:1:attempt:1") is True
    assert schedule(runtime, "case:1:attempt:1") is False
    with runtime.db.transaction() as s:
        assert len(s.scalars(select(DueAction)).all()) == 1


def test_due_action_runs_once_at_its_time(runtime: Runtime, clock: FrozenClock) -> None:
    ran: list[str] = []
    runtime.handlers = runtime.handlers.with_action(KIND, lambda ctx, a: ran.append(a.dedupe_key))
    schedule(runtime, "k1", due_in=timedelta(hours=2))
    worker = Worker(runtime)
    assert worker.run_until_idle() == 0  # not due yet
    clock.advance(timedelta(hours=2))
    assert worker.run_until_idle() == 1
    assert worker.run_until_idle() == 0
    assert ran == ["k1"]
    assert status_of(runtime, "k1").status == ActionStatus.DONE


def test_failures_back_off_then_park_with_the_error(runtime: Runtime, clock: FrozenClock) -> None:
    def boom(ctx: ActionContext, action: Claimed) -> None:
        raise ConnectionError("smtp down")

    runtime.handlers = runtime.handlers.with_action(KIND, boom)
    schedule(runtime, "k2", max_attempts=3)
    worker = Worker(runtime)
    delays = []
    for _ in range(3):
        worker.run_until_idle()
        row = status_of(runtime, "k2")
        if row.status == ActionStatus.PENDING:
            delays.append(row.due_at - clock.now())
            clock.set(row.due_at)
    row = status_of(runtime, "k2")
    assert row.status == ActionStatus.FAILED
    assert row.attempts == 3
    assert row.last_error == "ConnectionError: smtp down"
    assert len(delays) == 2 and delays[1] > delays[0] > timedelta(seconds=30)


def test_permanent_error_fails_at_once(runtime: Runtime) -> None:
    def invalid(ctx: ActionContext, action: Claimed) -> None:
        raise PermanentError("21211: invalid phone number")

    runtime.handlers = runtime.handlers.with_action(KIND, invalid)
    schedule(runtime, "k3")
    Worker(runtime).run_until_idle()
    row = status_of(runtime, "k3")
    assert (row.status, row.attempts) == (ActionStatus.FAILED, 1)


def test_crashed_worker_lease_expires_and_its_late_commit_is_refused(
    runtime: Runtime, clock: FrozenClock
) -> None:
    writes: list[str] = []

    def record(ctx: ActionContext, action: Claimed) -> None:
        writes.append(action.dedupe_key)
        ctx.session.execute(
            text("UPDATE due_actions SET payload = :p WHERE id = :i"),
            {"p": '{"written_by": "handler"}', "i": action.id},
        )

    runtime.handlers = runtime.handlers.with_action(KIND, record)
    schedule(runtime, "k4")
    lease = timedelta(minutes=5)
    crashed = due_actions.claim(runtime.db, "worker-a", clock.now(), lease=lease)
    assert [a.dedupe_key for a in crashed] == ["k4"]
    # worker-a dies here. Until the lease expires nobody else may take the action ...
    assert due_actions.claim(runtime.db, "worker-b", clock.now() + lease / 2) == []
    clock.advance(lease + timedelta(seconds=1))
    taken = due_actions.claim(runtime.db, "worker-b", clock.now(), lease=lease)
    assert [a.attempts for a in taken] == [2]
    assert due_actions.run_claimed(runtime, taken[0], "worker-b") == "done"
    # ... and a zombie worker-a finishing late commits nothing.
    assert due_actions.run_claimed(runtime, crashed[0], "worker-a") == "lease_lost"
    row = status_of(runtime, "k4")
    assert (row.status, row.lease_owner) == (ActionStatus.DONE, "worker-b")
    assert len(writes) == 2  # the handler ran twice, but only worker-b's writes committed


def test_cancel_pending_stops_actions_for_a_subject(runtime: Runtime) -> None:
    ran: list[str] = []
    runtime.handlers = runtime.handlers.with_action(KIND, lambda ctx, a: ran.append(a.dedupe_key))
    schedule(runtime, "k5", due_in=timedelta(days=1))
    with runtime.db.transaction() as s:
        assert due_actions.cancel_pending(s, "case:1", runtime.clock.now()) == 1
    runtime.clock.advance(timedelta(days=2))  # type: ignore[attr-defined]
    Worker(runtime).run_until_idle()
    assert ran == []
    assert status_of(runtime, "k5").status == ActionStatus.CANCELLED


def test_daily_job_runs_once_per_day_across_workers(runtime: Runtime, clock: FrozenClock) -> None:
    calls: list[str] = []
    runtime.handlers = runtime.handlers.with_daily_job(
        "test_scan", lambda rt, s: calls.append("scan")
    )
    a, b = Worker(runtime, worker_id="a"), Worker(runtime, worker_id="b")
    assert "test_scan" in a.run_daily_jobs()
    assert "test_scan" not in b.run_daily_jobs()
    clock.advance(timedelta(days=1))
    assert "test_scan" in b.run_daily_jobs()
    assert calls == ["scan", "scan"]
    with runtime.db.transaction() as s:
        owners = s.scalars(select(JobRun.owner).where(JobRun.job == "test_scan")).all()
        assert sorted(owners) == ["a", "b"]


def test_heartbeat_feeds_healthz(client: Any, runtime: Runtime, clock: FrozenClock) -> None:
    resp = client.get("/healthz")
    assert resp.status_code == 503 and resp.json["status"] == "degraded"
    Worker(runtime).heartbeat()
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.json["database"] == "ok" and resp.json["worker"]["ok"] is True
    clock.advance(timedelta(minutes=10))
    assert client.get("/healthz").json["worker"]["last_heartbeat_age_seconds"] == 600.0
