"""The run: a frozen clock stepping from one moment to the next (a renewal or customer action,
a due action, the daily jobs) from the start of the history to its end."""

from __future__ import annotations

import functools
import gc
import heapq
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import func, select

from recovery.devtools.history.billing import Billing
from recovery.devtools.history.model import (
    DAILY_JOBS_EVERY,
    DAILY_JOBS_HOUR,
    DAY,
    EXISTING_SHARE,
    HistoryReport,
)
from recovery.models import RecoveryCase
from recovery.services.events.sync import sync_from_stripe

# Young collections every this many allocations (CPython's default: 700), while the history runs.
YOUNG_COLLECTION_EVERY = 10_000


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """The history's objects live as long as it does (the fake's customers and events, the
    ORM's cached statements, the app), and CPython's cyclic collector walked them again and
    again: 1.1 s of the demo's ~13 CPU s, most of it in full collections. What exists before the
    run is frozen (never walked, https://docs.python.org/3/library/gc.html#gc.freeze; no
    collection first: that alone cost 0.1 s) and young collections come less often: 0.45 s.
    Cycles made during the run are still collected; the settings are restored after it."""
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, before[1], before[2])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


class History(Billing):
    # ---- the run -----------------------------------------------------------------------------

    def run(self) -> HistoryReport:
        try:
            with _fewer_collections():
                return self._run()
        finally:
            self.close()

    def _run(self) -> HistoryReport:
        started = time.perf_counter()
        self.clock.set(self.start)
        self.setup_catalogue()
        existing = int(self.n_customers * EXISTING_SHARE)
        for number in range(existing):
            self.sign_up(number, existing=True)
        # The account had customers before recovery was connected: backfill them the way a
        # business does on its first start (README: `recovery sync`).
        sync_from_stripe(self.rt.db, self.fake, self.clock, progress=False, requests_per_second=1e9)
        for number in range(existing, self.n_customers):
            ts = self.start.timestamp() + self.rng.uniform(1, self.days - 3) * DAY
            self.at(
                ts, functools.partial(self.sign_up, number, existing=False), reads_service=False
            )
        self.plan_scripted_cancel_flows()
        end = int(self.end.timestamp())
        next_daily = int(self.start.replace(hour=DAILY_JOBS_HOUR, minute=0, second=0).timestamp())
        if next_daily < self.now:
            next_daily += DAY
        daily_jobs = set(self.daily_jobs_runs(next_daily, end))
        cutoffs = self.retention_cutoffs(daily_jobs)
        while True:
            due = self.settle()  # nothing is due now: the next due action is in the future
            ts = min(end, next_daily, due or end, self._queue[0][0] if self._queue else end)
            if ts >= end:
                break
            if ts in cutoffs:
                self.flush()  # before the clock reaches it (see `retention_cutoffs`)
            self.clock.set(datetime.fromtimestamp(max(ts, self.now), UTC))
            if ts == next_daily:
                if next_daily in daily_jobs:
                    self.flush()
                    self.worker.run_daily_jobs()
                self.daily()
                next_daily += DAY
            while self._queue and self._queue[0][0] <= self.now:
                _, _, action, reads_service = heapq.heappop(self._queue)
                if reads_service:
                    self.flush()
                action()
                self.deliver()
        self.clock.set(self.end)
        self.release_all()
        self.flush()
        self.settle()
        self.report.seconds = time.perf_counter() - started
        self.count_cases()
        return self.report

    @staticmethod
    def daily_jobs_runs(first: int, end: int) -> list[int]:
        """When the history runs the worker's daily jobs (unix seconds; `first`: the first
        day's DAILY_JOBS_HOUR): every DAILY_JOBS_EVERY days and on the last day."""
        runs = list(range(first, end, DAY * DAILY_JOBS_EVERY))
        last = first + (end - 1 - first) // DAY * DAY
        return runs if last in runs or last < first else [*runs, last]

    def retention_cutoffs(self, daily_jobs: set[int]) -> set[int]:
        """The moments before which the daily jobs' retention deletes processed events
        (services/work/retention.py: received more than `retention_days` before a run). A
        renewal's events held back (`Simulation.deliver`) are delivered before the clock passes
        one, so each is received on the side of it where it was made, and the same events are
        kept as when each went at once."""
        days = self.rt.settings.retention_days
        if days <= 0:
            return set()
        return {run - days * DAY for run in daily_jobs}

    def count_cases(self) -> None:
        with self.rt.db.transaction() as session:
            rows = session.execute(
                select(RecoveryCase.status, func.count()).group_by(RecoveryCase.status)
            ).all()
        self.report.cases = {str(status): int(n) for status, n in rows}
        self.report.customers = len(self.subscribers)
