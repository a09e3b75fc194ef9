"""The simulation's plumbing: the schedule of what happens when, the fake's events delivered
through the real inbox like webhooks, and the worker running what comes due."""

from __future__ import annotations

import heapq
import itertools
import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask
from sqlalchemy import Connection, event, func, select

from recovery.adapters.clock import FrozenClock
from recovery.adapters.stripe_fake import FakeStripeGateway
from recovery.db import READ_ONLY_OPTION
from recovery.devtools.history.model import (
    DECLINES,
    HISTORY_DAYS,
    OPEN_AT_END,
    STORIES,
    Decline,
    HistoryReport,
    Subscriber,
)
from recovery.models import ActionStatus, DueAction
from recovery.runtime import Runtime
from recovery.services.events.inbox import receive_events
from recovery.worker import Worker

RENEWED = ["customer.subscription.updated", "charge.succeeded"]
_NEXT_DUE = select(func.min(DueAction.due_at)).where(DueAction.status == ActionStatus.PENDING)


class Simulation:
    # Renewals paid at once held back until something reads the service (see `deliver`);
    # False delivers each at once (the same database: tests/test_history_delivery.py).
    hold_back_renewals = True

    def __init__(
        self,
        runtime: Runtime,
        fake: FakeStripeGateway,
        clock: FrozenClock,
        *,
        customers: int = 300,
        seed: int = 7,
        end: datetime | None = None,
        days: int = HISTORY_DAYS,
    ) -> None:
        self.rt, self.fake, self.clock = runtime, fake, clock
        self.rng = random.Random(seed)
        self.n_customers = customers
        self.end = (end or datetime.now(UTC)).replace(microsecond=0)
        self.days = days
        self.start = self.end - timedelta(days=days)
        # One thread: the history's clock is frozen while the worker runs, so a pool only adds
        # hand-offs between threads (and leaves the order of the fake's calls to chance).
        self.worker = Worker(runtime, worker_id="demo-history", threads=1)
        self.report = HistoryReport()
        self.subscribers: list[Subscriber] = []
        self._queue: list[tuple[int, int, Callable[[], None], bool]] = []
        self._seq = itertools.count()
        self._delivered = 0
        self._app: Flask | None = None
        self._reader = runtime.db.engine.execution_options(**{READ_ONLY_OPTION: True})
        self._reading: Connection | None = None  # held for `next_due` while the history runs
        self._next_due: int | None = None
        self._due_moved = True  # a statement wrote due actions since `next_due` last looked
        event.listen(runtime.db.engine, "after_cursor_execute", self._watch_due_actions)
        self.bad_cards: dict[str, Decline] = {}  # cards that decline until healed
        # A floor, not a share: at 300 customers a share made a spike of failures in the
        # last week that no real business has.
        self.open_at_end = [next(d for d in DECLINES if d.name == name) for name in OPEN_AT_END]
        self.stories_owed = list(STORIES)  # see Story; told ones leave the list
        self.story_recheck: dict[str, int] = {}  # story -> not before (unix seconds)
        self.left_alone_in_time = False  # a failure nobody acts on, early enough to end lost
        self.quiet: set[str] = set()  # invoices of renewals paid at once (see `deliver`)
        # A renewal's period event, held until its charge an hour later (see `hold`).
        self._to_hold: set[str] = set()
        self._held: dict[str, dict[str, Any]] = {}
        self._first: list[dict[str, Any]] = []
        self.paid_at_once = False  # the step was a renewal paid at its first attempt
        self._backlog: list[dict[str, Any]] = []  # such renewals' events (see `deliver`)
        self.renewals_held = 0
        self.scripted: set[int] = {1}  # customers in a scripted story (1: the banner's)

    # ---- plumbing ----------------------------------------------------------------------------

    @property
    def now(self) -> int:
        return int(self.clock.now().timestamp())

    def at(self, ts: float, action: Callable[[], None], *, reads_service: bool = True) -> None:
        """Do `action` at `ts` (unix seconds), if that is before the end of the history.
        `reads_service=False`: it reads nothing the renewals held back (`deliver`) would change
        - only the fake (a renewal's charge also asks whether a story was told: cases and their
        SMS, which those renewals do not touch)."""
        ts = max(int(ts), self.now)
        if ts < self.end.timestamp():
            heapq.heappush(self._queue, (ts, next(self._seq), action, reads_service))

    def deliver(self, *, flush: bool = False) -> int:
        """Send the fake's new events through the real inbox, in order, like webhooks (a
        renewal's period event waits for the renewal's charge: `hold`).

        Left out: the invoice events of a renewal paid at its first attempt (its
        customer.subscription.updated and charge.succeeded do go through: the period and the
        customer's payment days are what the service uses from it). They change nothing the
        demo shows and would be a third of all events - and of the seeding time.

        Held back: those two events (a step that emitted exactly them, `paid_at_once`), until
        the next delivery of anything else or `flush` - which the history calls before every
        step that reads the service (a due action, the daily jobs, a customer's page) and
        before a retention cutoff (`History.retention_cutoffs`). They touch no case (a past-due
        subscription's renewal also emits its status change, and goes at once) and plan no
        expiry notice (a card running out before the next renewal goes at once): only the
        mirror reads them, so the service is where it would be whenever anything looks. One
        batch for many renewals instead of a transaction each (they were 1,127 of the 1,775
        batches, ~2.5 ms each); every table bench/demo_seed.py's history writes is the same but
        for the events' receipt times (`--against`, tests/test_history_delivery.py).
        """
        fresh, self._first = self._first, []
        for e in self.fake.events[self._delivered :]:
            if e["id"] in self._to_hold:
                self._to_hold.discard(e["id"])
                self._held[e["id"]] = e
            elif not (e["type"].startswith("invoice.") and e["data"]["object"]["id"] in self.quiet):
                fresh.append(e)
        self._delivered = len(self.fake.events)
        paid_at_once, self.paid_at_once = self.paid_at_once, False
        if paid_at_once and self.hold_back_renewals and [e["type"] for e in fresh] == RENEWED:
            self._backlog += fresh
            self.renewals_held += 1
            return 0
        if fresh or flush:
            fresh, self._backlog = self._backlog + fresh, []
        if fresh:
            bodies = [json.dumps(e).encode() for e in fresh]
            receive_events(self.rt.db, bodies, self.rt.processing_context, self.clock)
        self.report.events += len(fresh)
        return len(fresh)

    def flush(self) -> None:
        """Deliver the renewals' events held back (before anything reads the service)."""
        if self._backlog:
            self.deliver(flush=True)

    def hold(self, event_id: str) -> None:
        """Deliver this event (a renewal's customer.subscription.updated) with the renewal's
        charge an hour later, in one batch: a batch of one event costs the inbox a transaction
        of its own, and these were half of all batches. Nothing the demo shows moves (the figures'
        fingerprint of bench/demo_seed.py is the same). `release` says when."""
        self._to_hold.add(event_id)

    def release(self, event_id: str | None) -> None:
        """The held event goes first in the next delivery, with what the charge emits (a
        declined renewal's too: its case opens on the period it renewed, the batch processing
        the events in order; it went in a batch of its own before, with the same figures)."""
        event = self._held.pop(event_id, None) if event_id else None
        if event is not None:
            self._first.append(event)

    def release_all(self) -> None:
        """At the end: whatever is still held goes out (a charge after the end never came)."""
        for event_id in list(self._held):
            self.release(event_id)

    def settle(self) -> int | None:
        """Deliver events and run whatever is due now, until neither has anything left.
        Returns when the next due action is due (None: nothing is pending)."""
        self.deliver()
        while (due := self.next_due()) is not None and due <= self.now:
            self.flush()
            # The worker ticks every second: what it does lands a second after its cause
            # (the same second would make the mirror ask Stripe which change came last).
            self.clock.advance(timedelta(seconds=1))
            self.report.actions_run += self.worker.run_due_actions()
            self.deliver()
        return due

    def next_due(self) -> int | None:
        """When the earliest pending due action is due (unix seconds, rounded up)."""
        # Asked after every step of the history (thousands of times), most of which wrote no
        # due action: read again only after one did, on a plain connection.
        if self._due_moved:
            self._due_moved = False
            # One connection for the run (a checkout, a connection object and a checkin per read
            # were 40 % of its cost); each read still in a transaction of its own.
            if self._reading is None:
                self._reading = self._reader.connect()
            with self._reading.begin():
                due = self._reading.execute(_NEXT_DUE).scalar()
            self._next_due = int(due.timestamp()) + (1 if due.microsecond else 0) if due else None
        return self._next_due

    def close(self) -> None:
        if self._reading is not None:
            self._reading.close()
            self._reading = None

    def _watch_due_actions(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if not statement.startswith("SELECT") and "due_actions" in statement:
            self._due_moved = True

    def client(self) -> Any:
        if self._app is None:
            from recovery.app import create_app

            # The pages' rate limits are per address, and every simulated customer comes
            # from this one process.
            self._app = create_app(runtime=self.rt, config={"RATELIMIT_ENABLED": False})
        return self._app.test_client()
