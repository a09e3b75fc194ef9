"""The worker: APScheduler as a ticker over the durable due-actions table.

APScheduler only says "tick"; the work itself lives in our tables (due actions, pending
events), so any number of worker processes can run against one PostgreSQL and a crashed one
loses nothing. Jobs that must run once per period cluster-wide (daily scans) take a
PostgreSQL advisory lock and record a `job_runs` row.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
import zlib
from collections.abc import Callable
from datetime import timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy import select, text
from sqlalchemy.dialects import postgresql, sqlite

from recovery.models import JobRun, WorkerHeartbeat
from recovery.runtime import DailyJob, Runtime
from recovery.services.events import inbox
from recovery.services.work import due_actions

log = logging.getLogger(__name__)

_SQLITE_SINGLETON = threading.Lock()


class Worker:
    def __init__(
        self,
        runtime: Runtime,
        *,
        worker_id: str | None = None,
        batch_size: int = 50,
        lease: timedelta = due_actions.DEFAULT_LEASE,
    ) -> None:
        self.runtime = runtime
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.batch_size = batch_size
        self.lease = lease
        self.started_at = runtime.clock.now()
        self._scheduler: BackgroundScheduler | BlockingScheduler | None = None

    # ---- one step each; the scheduler calls them, tests call them directly -------------------

    def run_due_actions(self) -> int:
        """Claim and run one batch. Returns how many actions were run."""
        db, clock = self.runtime.db, self.runtime.clock
        batch = due_actions.claim(db, self.worker_id, clock.now(), self.batch_size, self.lease)
        for action in batch:
            due_actions.run_claimed(self.runtime, action, self.worker_id)
        return len(batch)

    def redrive_events(self) -> int:
        return inbox.redrive_due_events(
            self.runtime.db, self.runtime.processing_context, self.runtime.clock
        )

    def heartbeat(self) -> None:
        now = self.runtime.clock.now()
        values = {
            "worker_id": self.worker_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": self.started_at,
            "beat_at": now,
        }
        with self.runtime.db.transaction() as session:
            if self.runtime.db.is_postgres:
                stmt = postgresql.insert(WorkerHeartbeat).values(**values)
                session.execute(
                    stmt.on_conflict_do_update(index_elements=["worker_id"], set_={"beat_at": now})
                )
            else:
                lite = sqlite.insert(WorkerHeartbeat).values(**values)
                session.execute(
                    lite.on_conflict_do_update(index_elements=["worker_id"], set_={"beat_at": now})
                )

    def run_daily_jobs(self) -> list[str]:
        """Run each daily job unless some worker already ran it today. Returns those run here."""
        period = self.runtime.clock.now().date().isoformat()
        jobs = self.runtime.handlers.daily_jobs.items()
        return [name for name, job in jobs if self.run_singleton(name, period, job)]

    def run_singleton(self, name: str, period: str, job: DailyJob) -> bool:
        db = self.runtime.db
        with db.transaction() as session:
            if db.is_postgres:
                key = zlib.crc32(name.encode())
                locked = session.execute(
                    text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": key}
                ).scalar()
                if not locked:
                    return False
            elif not _SQLITE_SINGLETON.acquire(blocking=False):
                return False
            try:
                done = session.scalar(
                    select(JobRun.id).where(JobRun.job == name, JobRun.period == period)
                )
                if done is not None:
                    return False
                now = self.runtime.clock.now()
                run = JobRun(job=name, period=period, started_at=now, owner=self.worker_id)
                session.add(run)
                session.flush()
                job(self.runtime, session)
                run.finished_at = self.runtime.clock.now()
                return True
            finally:
                if not db.is_postgres:
                    _SQLITE_SINGLETON.release()

    def run_until_idle(self, max_batches: int = 10_000) -> int:
        """Drain everything due now (tests and the CLI). Returns the number of actions run."""
        total = 0
        for _ in range(max_batches):
            ran = self.run_due_actions()
            total += ran
            if ran == 0:
                break
        return total

    def tick(self) -> None:
        try:
            self.heartbeat()
            while self.run_due_actions() == self.batch_size:
                pass
        except Exception:  # a tick must never kill the scheduler thread
            log.exception("worker tick failed")

    def _safe(self, fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except Exception:
                log.exception("worker job %s failed", getattr(fn, "__name__", fn))

        return run

    # ---- scheduling ----------------------------------------------------------------------------

    def start(self, *, blocking: bool) -> None:
        tick = self.runtime.settings.worker_tick_seconds
        scheduler: BackgroundScheduler | BlockingScheduler = (
            BlockingScheduler(timezone="UTC") if blocking else BackgroundScheduler(timezone="UTC")
        )
        common = {"max_instances": 1, "coalesce": True}
        scheduler.add_job(self.tick, "interval", seconds=tick, id="tick", **common)
        scheduler.add_job(
            self._safe(self.redrive_events), "interval", seconds=15, id="redrive", **common
        )
        scheduler.add_job(
            self._safe(self.run_daily_jobs), "interval", minutes=10, id="daily", **common
        )
        self._scheduler = scheduler
        log.info("worker %s starting (tick %.1fs)", self.worker_id, tick)
        scheduler.start()

    def stop(self) -> None:
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=True)
