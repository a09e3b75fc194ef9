"""The worker: processes stored events as they arrive, runs due actions, and the daily jobs.

The work itself lives in our tables (pending events, due actions), so any number of worker
processes can run against one PostgreSQL and a crashed one loses nothing (their batches of
events take turns with each other and with action rounds: db.take_writers_turn):

- events: a thread waits for new ones - PostgreSQL's LISTEN (the webhook's insert NOTIFYs
  `recovery_events`), or in one process (SQLite's `recovery run`) the inbox's `arrived` flag -
  and processes them in batches, so an event is processed within a second of arriving (what
  they scheduled for now is drained on a thread beside it, never in its way);
- due actions: claimed and decided in batches, their provider calls run on a pool of
  `RECOVERY_WORKER_THREADS` threads with no transaction open (services/work/due_actions.py);
  on PostgreSQL `RECOVERY_WORKER_LOOPS` such claim/decide/record loops share that pool;
- APScheduler ticks: each second the due actions and any events left (a missed notification,
  a failed event whose backoff passed), every ten minutes the daily jobs, every minute the
  periodic ones (the overview's rollups). Jobs that must run
  once per day cluster-wide take a PostgreSQL advisory lock and record a `job_runs` row.
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
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy import select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from recovery.db import insert_or_ignore
from recovery.models import JobRun, WorkerHeartbeat
from recovery.runtime import DailyJob, MaintenanceJob, Runtime
from recovery.services.events import inbox
from recovery.services.work import due_actions

log = logging.getLogger(__name__)

_SQLITE_SINGLETON = threading.Lock()
ABANDONED_JOB_AFTER = timedelta(hours=1)  # a maintenance run that never finished: run it again
LISTEN_RETRY_SECONDS = 5.0


class Worker:
    def __init__(
        self,
        runtime: Runtime,
        *,
        worker_id: str | None = None,
        batch_size: int = due_actions.DEFAULT_BATCH,
        lease: timedelta = due_actions.DEFAULT_LEASE,
        threads: int | None = None,
    ) -> None:
        self.runtime = runtime
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.batch_size = batch_size
        self.lease = lease
        self.started_at = runtime.clock.now()
        self.actions = due_actions.ActionRunner(
            runtime, self.worker_id, threads=threads, batch_size=batch_size, lease=lease
        )
        if runtime.settings.provider_deadline_seconds * 2 > lease.total_seconds():
            log.warning(
                "RECOVERY_PROVIDER_DEADLINE_SECONDS (%s) is more than half the lease (%s)",
                runtime.settings.provider_deadline_seconds,
                lease,
            )
        self._scheduler: BackgroundScheduler | BlockingScheduler | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._events_lock = threading.Lock()
        self._actions_lock = threading.Lock()  # one drain at a time: subjects stay in order
        self._drainer: threading.Thread | None = None  # the events loop's latest drain

    # ---- one step each; the scheduler calls them, tests call them directly -------------------

    def run_due_actions(self) -> int:
        """Run everything due now. Returns how many actions were claimed."""
        with self._actions_lock:
            return self.actions.drain()

    def run_until_idle(self, max_batches: int = 10_000) -> int:
        """Drain everything due now (tests and the CLI). Returns the number of actions run."""
        return self.run_due_actions()

    def process_events(self) -> int:
        """Process every stored event that is due, batch by batch. Returns how many."""
        with self._events_lock:  # the listener thread and the tick take turns
            return inbox.redrive_due_events(
                self.runtime.db, self.runtime.processing_context, self.runtime.clock
            )

    def redrive_events(self) -> int:
        return self.process_events()

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
        handlers = self.runtime.handlers
        ran = [n for n, job in handlers.daily_jobs.items() if self.run_singleton(n, period, job)]
        for name, maintenance in handlers.maintenance.items():
            if self.run_maintenance(name, period, maintenance):
                ran.append(name)
        return ran

    def run_periodic_jobs(self) -> int:
        """Run the every-minute jobs (the overview's rollups). Returns rows touched."""
        return sum(job(self.runtime) for job in self.runtime.handlers.periodic.values())

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

    def run_maintenance(self, name: str, period: str, job: MaintenanceJob) -> bool:
        """A daily job that commits in small batches of its own: its `job_runs` row is claimed
        first (the unique (job, period) makes it once a day cluster-wide), then it runs, then
        the row is marked finished. A run that never finished is taken over after an hour."""
        db, now = self.runtime.db, self.runtime.clock.now()
        with db.transaction() as session:
            run = session.scalar(
                select(JobRun).where(JobRun.job == name, JobRun.period == period).with_for_update()
            )
            if run is None:
                values = {"job": name, "period": period, "started_at": now, "owner": self.worker_id}
                if not insert_or_ignore(session, JobRun, values, ["job", "period"]):
                    return False
            elif run.finished_at is not None or run.started_at > now - ABANDONED_JOB_AFTER:
                return False
            else:
                run.started_at, run.owner = now, self.worker_id
        job(self.runtime)
        with db.transaction() as session:
            session.execute(
                update(JobRun)
                .where(JobRun.job == name, JobRun.period == period)
                .values(finished_at=self.runtime.clock.now())
            )
        return True

    def tick(self) -> None:
        try:
            self.heartbeat()
            self.process_events()
            self.run_due_actions()
        except Exception:  # a tick must never kill the scheduler thread
            log.exception("worker tick failed")

    def _safe(self, fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except Exception:
                log.exception("worker job %s failed", getattr(fn, "__name__", fn))

        return run

    # ---- events as they arrive -----------------------------------------------------------------

    def _events_loop(self) -> None:
        """Process events whenever some arrived (or every tick at the latest)."""
        wait = self.runtime.settings.worker_tick_seconds
        while not self._stop.is_set():
            inbox.arrived.wait(wait)
            inbox.arrived.clear()
            if self._stop.is_set():
                return
            try:
                if self.process_events():
                    self._drain_beside()
            except Exception:
                log.exception("processing events failed")

    def _drain_beside(self) -> None:
        """Run what the events scheduled for now (unless a tick or an earlier drain is at it) on
        a thread of its own: drained here, its provider calls held up the events that arrived
        meanwhile by the whole drain, which at 500 events/s was most of their wait."""
        if not self._actions_lock.acquire(blocking=False):
            return

        def drain() -> None:
            try:
                self.actions.drain()
            except Exception:
                log.exception("running due actions failed")
            finally:
                self._actions_lock.release()

        self._drainer = threading.Thread(target=drain, name="recovery-drain", daemon=True)
        self._drainer.start()

    def _listen_loop(self) -> None:
        """PostgreSQL: turn NOTIFY recovery_events into the in-process wake-up."""
        import psycopg

        url = self.runtime.db.engine.url.set(drivername="postgresql")
        conninfo = url.render_as_string(hide_password=False)
        while not self._stop.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {inbox.NOTIFY_CHANNEL}")
                    inbox.arrived.set()  # whatever arrived while we were not listening
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            inbox.arrived.set()
            except Exception as exc:  # the database restarted: listen again shortly
                log.warning("LISTEN %s failed: %s", inbox.NOTIFY_CHANNEL, exc.__class__.__name__)
                self._stop.wait(LISTEN_RETRY_SECONDS)

    def _start_thread(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # ---- scheduling ----------------------------------------------------------------------------

    def start(self, *, blocking: bool) -> None:
        tick = self.runtime.settings.worker_tick_seconds
        scheduler: BackgroundScheduler | BlockingScheduler = (
            BlockingScheduler(timezone="UTC") if blocking else BackgroundScheduler(timezone="UTC")
        )
        common: dict[str, Any] = {"max_instances": 1, "coalesce": True}
        scheduler.add_job(self.tick, "interval", seconds=tick, id="tick", **common)
        scheduler.add_job(
            self._safe(self.run_daily_jobs), "interval", minutes=10, id="daily", **common
        )
        scheduler.add_job(
            self._safe(self.run_periodic_jobs), "interval", minutes=1, id="periodic", **common
        )
        self._scheduler = scheduler
        self._start_thread(self._events_loop, "recovery-events")
        if self.runtime.db.is_postgres:
            self._start_thread(self._listen_loop, "recovery-listen")
        log.info(
            "worker %s starting (tick %.1fs, %d loops, %d threads for provider calls)",
            self.worker_id,
            tick,
            self.actions.loops,
            self.actions.threads,
        )
        scheduler.start()

    def stop(self) -> None:
        self._stop.set()
        inbox.arrived.set()
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=True)
        for thread in self._threads:
            thread.join(timeout=10)
        if self._drainer is not None:
            self._drainer.join(timeout=10)
        self.actions.close()
