"""The run: a frozen clock stepping from one moment to the next (a renewal or customer action,
a due action, the daily jobs) from the start of the history to its end."""

from __future__ import annotations

import functools
import heapq
import time
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


class History(Billing):
    # ---- the run -----------------------------------------------------------------------------

    def run(self) -> HistoryReport:
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
            self.at(ts, functools.partial(self.sign_up, number, existing=False))
        self.plan_scripted_cancel_flows()
        end = int(self.end.timestamp())
        next_daily = int(self.start.replace(hour=DAILY_JOBS_HOUR, minute=0, second=0).timestamp())
        if next_daily < self.now:
            next_daily += DAY
        day = 0
        while True:
            due = self.settle()  # nothing is due now: the next due action is in the future
            ts = min(end, next_daily, due or end, self._queue[0][0] if self._queue else end)
            if ts >= end:
                break
            self.clock.set(datetime.fromtimestamp(max(ts, self.now), UTC))
            if ts == next_daily:
                if day % DAILY_JOBS_EVERY == 0 or next_daily + DAY >= end:
                    self.worker.run_daily_jobs()
                self.daily()
                next_daily += DAY
                day += 1
            while self._queue and self._queue[0][0] <= self.now:
                _, _, action = heapq.heappop(self._queue)
                action()
                self.deliver()
        self.clock.set(self.end)
        self.settle()
        self.report.seconds = time.perf_counter() - started
        self.count_cases()
        return self.report

    def count_cases(self) -> None:
        with self.rt.db.transaction() as session:
            rows = session.execute(
                select(RecoveryCase.status, func.count()).group_by(RecoveryCase.status)
            ).all()
        self.report.cases = {str(status): int(n) for status, n in rows}
        self.report.customers = len(self.subscribers)
