"""Backfill the mirror from Stripe: for a first start, or after webhooks were lost.

Reads customers (with their cards), subscriptions of every status, open and uncollectible
invoices, and the last `since_days` of events (Stripe keeps 30 days), page by page. Each page is
committed on its own and its cursor saved to a small JSON state file, so an interrupted run
(Ctrl-C, an outage, a crash) resumes where it stopped; a completed run deletes the file.

State read from the API is current as of the read, so it is applied with `ts = now`: an older
event processed later (a late webhook, or one of the events stored here) never overwrites it.
Events are only stored in the inbox, pending, for the worker to process like any webhook.

Requests are paced below Stripe's rate limits (25/s in test mode, 100/s live, shared with the
running service): 20/s and 80/s by default. On `RateLimited` (after the gateway's own retries)
the sync halves its pace, waits, and re-reads the page from its cursor.
https://docs.stripe.com/rate-limits
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import islice
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session
from tqdm import tqdm

from recovery.adapters.clock import Clock
from recovery.adapters.stripe.errors import InvalidRequest, NotFound, RateLimited
from recovery.adapters.stripe.protocol import PAGE_SIZE, StripeDict, StripeGateway
from recovery.db import Database
from recovery.domain.stripe_objects.fields import MappingError
from recovery.domain.stripe_objects.states import (
    card_state,
    customer_state,
    invoice_state,
    subscription_state,
)
from recovery.services.events import mirror
from recovery.services.events.inbox import InvalidEvent, parse_event, store_event

log = logging.getLogger(__name__)

TEST_MODE_RATE = 20.0  # requests per second; Stripe allows 25 in test mode
LIVE_MODE_RATE = 80.0  # Stripe allows 100 in live mode
MAX_RATE_LIMIT_WAITS = 8
STATE_VERSION = 1
INVOICE_STATUSES = ("open", "uncollectible")  # open covers past-due ones


@dataclass
class SyncReport:
    customers: int = 0
    payment_methods: int = 0
    subscriptions: int = 0
    invoices: int = 0
    events_seen: int = 0
    events_stored: int = 0  # new to the inbox
    skipped: int = 0  # objects the mappers rejected
    pages: int = 0
    requests: int = 0
    rate_limit_waits: int = 0
    resumed: bool = False
    completed: bool = False
    phases_done: list[str] = field(default_factory=list)


class Pacer:
    """Spaces requests at least 1/rate seconds apart. `slow_down` halves the rate."""

    def __init__(
        self,
        rate: float,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self._monotonic = monotonic
        self._sleep = sleep
        self._next = 0.0

    def acquire(self) -> None:
        now = self._monotonic()
        if self._next > now:
            self._sleep(self._next - now)
            now = self._next
        self._next = now + 1.0 / self.rate

    def slow_down(self) -> None:
        self.rate = max(self.rate / 2, 0.5)


class SyncState:
    """Per-phase cursors in a JSON file; without a path, kept in memory only."""

    def __init__(self, path: Path | None, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    @classmethod
    def load(cls, path: Path | None) -> SyncState:
        if path is not None and path.exists():
            try:
                data = json.loads(path.read_text())
                if data.get("version") == STATE_VERSION:
                    return cls(path, data)
            except (OSError, ValueError, AttributeError):
                pass
            log.warning("ignoring unreadable sync state %s", path)
        return cls(path, {"version": STATE_VERSION, "phases": {}})

    @property
    def resumed(self) -> bool:
        return bool(self.data["phases"])

    def phase(self, name: str) -> dict[str, Any]:
        phases: dict[str, dict[str, Any]] = self.data["phases"]
        return phases.setdefault(name, {"cursor": None, "done": False})

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)  # atomic: a crash leaves the old state or the new one

    def clear(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def default_rate(gateway: StripeGateway) -> float:
    return LIVE_MODE_RATE if gateway.livemode else TEST_MODE_RATE


class _Sync:
    def __init__(
        self,
        db: Database,
        gateway: StripeGateway,
        clock: Clock,
        state: SyncState,
        pacer: Pacer,
        *,
        progress: bool,
        page_size: int,
        sleep: Callable[[float], None],
    ) -> None:
        self.db = db
        self.gateway = gateway
        self.clock = clock
        self.state = state
        self.pacer = pacer
        self.progress = progress
        self.page_size = page_size
        self.sleep = sleep
        self.report = SyncReport(resumed=state.resumed)

    def request(self) -> None:
        self.pacer.acquire()
        self.report.requests += 1

    def run_phase(
        self,
        name: str,
        pages: Callable[[str | None], Iterator[StripeDict]],
        apply_page: Callable[[Session, list[StripeDict], dict[str, Any]], None],
        prefetch: Callable[[list[StripeDict]], dict[str, Any]] | None = None,
    ) -> None:
        phase = self.state.phase(name)
        if phase["done"]:
            self.report.phases_done.append(name)
            return
        waits = 0
        saved_cursor = phase["cursor"]
        with tqdm(desc=f"sync {name}", unit=" obj", disable=not self.progress, leave=False) as bar:
            while True:
                try:
                    self._pages(phase, pages, apply_page, prefetch, bar)
                    break
                except (NotFound, InvalidRequest):
                    # A saved cursor Stripe no longer accepts (its object was deleted): start
                    # the phase over; re-applying objects is harmless.
                    if saved_cursor is None or phase["cursor"] != saved_cursor:
                        raise
                    log.warning("sync %s: cursor %s refused, starting over", name, saved_cursor)
                    phase["cursor"] = saved_cursor = None
                except RateLimited as exc:
                    # The gateway already retried with backoff: slow down for the rest of the
                    # run and re-read this page from the last saved cursor.
                    waits += 1
                    self.report.rate_limit_waits += 1
                    if waits > MAX_RATE_LIMIT_WAITS:
                        raise
                    self.pacer.slow_down()
                    wait = exc.retry_after or min(2.0**waits, 60.0)
                    log.warning("sync %s rate limited; waiting %.1fs", name, wait)
                    self.sleep(wait)
        phase.update(done=True, cursor=None)
        self.state.save()
        self.report.phases_done.append(name)

    def _pages(
        self,
        phase: dict[str, Any],
        pages: Callable[[str | None], Iterator[StripeDict]],
        apply_page: Callable[[Session, list[StripeDict], dict[str, Any]], None],
        prefetch: Callable[[list[StripeDict]], dict[str, Any]] | None,
        bar: Any,
    ) -> None:
        objects = pages(phase["cursor"])
        while True:
            # The gateway fetches a page when the iterator runs dry, so pacing before taking
            # each page's worth paces the list requests themselves.
            self.request()
            batch = list(islice(objects, self.page_size))
            if not batch:
                return
            extra = prefetch(batch) if prefetch else {}  # network calls stay outside the txn
            with self.db.transaction() as session:
                apply_page(session, batch, extra)
            phase["cursor"] = batch[-1]["id"]
            self.state.save()
            self.report.pages += 1
            bar.update(len(batch))
            if len(batch) < self.page_size:
                return

    # ---- per resource --------------------------------------------------------------------------

    def ts(self) -> int:
        return int(self.clock.now().timestamp())

    def customer_cards(self, batch: list[StripeDict]) -> dict[str, Any]:
        cards: dict[str, list[StripeDict]] = {}
        for customer in batch:
            if not customer.get("deleted"):
                self.request()
                cards[customer["id"]] = self.gateway.list_customer_payment_methods(customer["id"])
        return cards

    def apply_customers(
        self, session: Session, batch: list[StripeDict], cards: dict[str, Any]
    ) -> None:
        ts = self.ts()
        for obj in batch:
            try:
                mirror.apply_customer(session, customer_state(obj), ts)
                self.report.customers += 1
                for card in cards.get(obj["id"], []):
                    mirror.apply_card(session, card_state(card), ts)
                    self.report.payment_methods += 1
            except MappingError as exc:
                self._skip(obj, exc)

    def apply_subscriptions(
        self, session: Session, batch: list[StripeDict], _: dict[str, Any]
    ) -> None:
        ts = self.ts()
        for obj in batch:
            try:
                mirror.apply_subscription(session, subscription_state(obj), ts)
                self.report.subscriptions += 1
            except MappingError as exc:
                self._skip(obj, exc)

    def apply_invoices(self, session: Session, batch: list[StripeDict], _: dict[str, Any]) -> None:
        ts = self.ts()
        for obj in batch:
            try:
                mirror.apply_invoice(session, invoice_state(obj), ts)
                self.report.invoices += 1
            except MappingError as exc:
                self._skip(obj, exc)

    def store_events(self, session: Session, batch: list[StripeDict], _: dict[str, Any]) -> None:
        now = self.clock.now()
        for obj in batch:
            body = json.dumps(obj, separators=(",", ":")).encode()
            try:
                parsed, _data = parse_event(body)
            except InvalidEvent as exc:
                self._skip(obj, exc)
                continue
            self.report.events_seen += 1
            if store_event(session, parsed, body, now):
                self.report.events_stored += 1

    def _skip(self, obj: StripeDict, exc: Exception) -> None:
        log.warning("sync skipped %s %s: %s", obj.get("object"), obj.get("id"), exc)
        self.report.skipped += 1


def _invoices_after(
    gateway: StripeGateway, status: str, cursor: str | None
) -> Iterator[StripeDict]:
    return gateway.iter_invoices(status, starting_after=cursor)


def _analyze(db: Database) -> None:
    """Fresh planner statistics once the backfill has filled the tables (PostgreSQL). Left to
    autovacuum, they come a minute or more later, and until then the planner plans - and
    keeps the plans of prepared statements - for the near-empty tables it last saw: in the
    chaos replay a sequential scan of 1,600 charges for every retry decision (README,
    "Replays stored like webhooks"). Every table: a backfill's triggers fill more than the
    mirror. SQLite keeps its planner's defaults: no statistics were ever gathered there."""
    if not db.is_postgres:
        return
    started = time.monotonic()
    with db.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()
    log.info("sync: planner statistics gathered in %.1f s", time.monotonic() - started)


def sync_from_stripe(
    db: Database,
    gateway: StripeGateway,
    clock: Clock,
    *,
    progress: bool = True,
    state_path: Path | str | None = None,
    since_days: int = 30,
    requests_per_second: float | None = None,
    page_size: int = PAGE_SIZE,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> SyncReport:
    """Backfill the mirror and the event inbox from Stripe. Resumes from `state_path` if a
    previous run was interrupted; raises the gateway's error if Stripe stays unavailable (the
    cursor is kept, so simply run it again)."""
    state = SyncState.load(Path(state_path) if state_path is not None else None)
    if state.data.get("livemode", gateway.livemode) != gateway.livemode:
        log.warning("sync state %s belongs to the other mode's account; starting over", state.path)
        state = SyncState(state.path, {"version": STATE_VERSION, "phases": {}})
    state.data["livemode"] = gateway.livemode
    if "events_created_gte" not in state.data:  # fixed at the first run, kept on resume
        since = clock.now() - timedelta(days=since_days)
        state.data["events_created_gte"] = int(since.timestamp())
        state.data["started_at"] = clock.now().isoformat()
    rate = requests_per_second or default_rate(gateway)
    pacer = Pacer(rate, monotonic=monotonic, sleep=sleep)
    run = _Sync(
        db, gateway, clock, state, pacer, progress=progress, page_size=page_size, sleep=sleep
    )
    if run.report.resumed:
        log.info("resuming the Stripe sync from %s", state.path)
    created_gte: int = state.data["events_created_gte"]

    run.run_phase("customers", gateway.iter_customers, run.apply_customers, run.customer_cards)
    run.run_phase("subscriptions", gateway.iter_subscriptions, run.apply_subscriptions)
    for status in INVOICE_STATUSES:
        invoices = functools.partial(_invoices_after, gateway, status)
        run.run_phase(f"invoices:{status}", invoices, run.apply_invoices)
    run.run_phase(
        "events",
        lambda cursor: gateway.iter_events(created_gte, starting_after=cursor),
        run.store_events,
    )
    _analyze(db)
    state.clear()
    run.report.completed = True
    return run.report
