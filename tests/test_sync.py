"""The Stripe backfill: against the fake gateway into SQLite (schema by create_all); its
planner statistics on PostgreSQL."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

import recovery.models  # noqa: F401 - registers every table
from recovery.adapters.clock import FrozenClock
from recovery.adapters.stripe.errors import RateLimited, Unavailable
from recovery.adapters.stripe_fake import FakeStripeGateway
from recovery.config import Settings
from recovery.db import Base, Database
from recovery.models import (
    Customer,
    EventStatus,
    Invoice,
    PaymentMethod,
    StripeEvent,
    Subscription,
)
from recovery.rules import Rules
from recovery.runtime import ProcessingContext, Runtime
from recovery.services.events.inbox import process_stored_event, receive_events
from recovery.services.events.sync import MAX_RATE_LIMIT_WAITS, SyncReport, sync_from_stripe
from recovery.services.registry import HANDLERS
from tests.support import stripe_payloads as sp

START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
NOW = int(START.timestamp())
PAGE = 2


@dataclass
class SimTime:
    """Monotonic time that only moves when the code under test sleeps."""

    now: float = 0.0
    sleeps: list[float] = field(default_factory=list)

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'recovery.db'}")
    Base.metadata.create_all(database.engine)
    yield database
    database.dispose()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture
def fake(clock: FrozenClock) -> FakeStripeGateway:
    """Five customers (four with a card), subscriptions of several statuses, invoices of every
    status, and a month and a half of events."""
    gateway = FakeStripeGateway(clock=clock, page_size=PAGE)
    for n in range(5):
        customer = gateway.add_customer(email=f"c{n}@example.com", created=NOW - 1000 + n)
        if n:
            card = gateway.add_payment_method(customer["id"], last4=f"000{n}")
            gateway.store["customer"][customer["id"]]["invoice_settings"][
                "default_payment_method"
            ] = card["id"]
        status = ["active", "past_due", "canceled", "trialing", "unpaid"][n]
        sub = gateway.add_subscription(customer["id"], status=status, created=NOW - 900 + n)
        invoice_status = ["open", "open", "uncollectible", "paid", "void"][n]
        invoice = gateway.add_invoice(
            customer["id"],
            subscription_id=sub["id"],
            status=invoice_status,
            attempt_count=2,
            created=NOW - 800 + n,
        )
        gateway.add_event("invoice.payment_failed", invoice, created=NOW - 3600 - n)
    for n in range(2):  # two one-off invoices: three pages of open invoices
        gateway.add_invoice(customer["id"], amount_due=500, created=NOW - 700 + n)
    gateway.add_event(
        "customer.created", {"id": "cus_old", "object": "customer"}, created=NOW - 45 * 86400
    )
    return gateway


def run(
    db: Database,
    fake: FakeStripeGateway,
    clock: FrozenClock,
    state: Path | None,
    time: SimTime | None = None,
    **kwargs: Any,
) -> SyncReport:
    time = time or SimTime()
    return sync_from_stripe(
        db,
        fake,
        clock,
        progress=False,
        state_path=state,
        page_size=PAGE,
        sleep=time.sleep,
        monotonic=time.monotonic,
        **kwargs,
    )


def count(db: Database, model: type) -> int:
    with db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_sync_backfills_the_mirror_and_the_inbox(
    db: Database, fake: FakeStripeGateway, clock: FrozenClock, tmp_path: Path
) -> None:
    state = tmp_path / "instance" / "sync-state.json"
    report = run(db, fake, clock, state)

    assert report.completed and not report.resumed and report.skipped == 0
    assert (report.customers, report.payment_methods, report.subscriptions) == (5, 4, 5)
    assert report.invoices == 5  # open and uncollectible; paid and void are history
    assert (report.events_seen, report.events_stored) == (5, 5)  # the 45-day-old one is gone
    assert not state.exists()  # a completed run leaves nothing to resume

    assert count(db, Customer) == 5 and count(db, PaymentMethod) == 4
    assert count(db, Subscription) == 5 and count(db, Invoice) == 5
    with db.transaction() as session:
        statuses = set(session.scalars(select(Subscription.status)))
        assert statuses == {"active", "past_due", "canceled", "trialing", "unpaid"}
        assert set(session.scalars(select(Invoice.status))) == {"open", "uncollectible"}
        events = session.scalars(select(StripeEvent)).all()
        assert {e.status for e in events} == {EventStatus.PENDING}  # left for the worker
        assert all(json.loads(e.payload)["id"] == e.id for e in events)
        card_rows = session.scalars(select(PaymentMethod)).all()
        assert all(row.customer_id and row.last4 for row in card_rows)
        # fetched state is stamped with the fetch time
        assert {row.version_ts for row in session.scalars(select(Customer))} == {NOW}


def test_requests_are_paced_below_the_configured_rate(
    db: Database, fake: FakeStripeGateway, clock: FrozenClock
) -> None:
    time = SimTime()
    stamps: list[float] = []
    gate = fake._gate

    def timed_gate(method: str, params: dict[str, Any], key: str | None) -> None:
        stamps.append(time.now)
        gate(method, params, key)

    fake._gate = timed_gate  # type: ignore[method-assign]
    report = run(db, fake, clock, None, time, requests_per_second=10)
    assert len(stamps) == len(fake.requests) > 10
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert min(gaps) >= 0.1 - 1e-9
    assert report.requests >= len(stamps)

    # Without a rate the key's mode decides: 20/s for test mode.
    time = SimTime()
    run(db, FakeStripeGateway(clock=clock), clock, None, time)
    live = FakeStripeGateway(clock=clock, livemode=True)
    for _ in range(3):
        live.add_customer()
    live_time = SimTime()
    run(db, live, clock, None, live_time)
    assert live_time.sleeps and max(live_time.sleeps) == pytest.approx(1 / 80)


@pytest.mark.parametrize("method", ["iter_customers", "iter_invoices", "iter_events"])
def test_an_interrupted_sync_resumes_from_its_cursor_without_duplicates(
    db: Database, fake: FakeStripeGateway, clock: FrozenClock, tmp_path: Path, method: str
) -> None:
    state = tmp_path / "sync-state.json"
    fake.outage(1, kind="server_error", after=1, methods={method})  # page 2 fails
    with pytest.raises(Unavailable):
        run(db, fake, clock, state)
    saved = json.loads(state.read_text())
    phase = {
        "iter_customers": "customers",
        "iter_invoices": "invoices:open",
        "iter_events": "events",
    }[method]
    cursor = saved["phases"][phase]["cursor"]
    assert cursor and not saved["phases"][phase]["done"]
    requests_before = len(fake.requests)

    clock.advance(timedelta(minutes=5))
    report = run(db, fake, clock, state)
    assert report.completed and report.resumed and not state.exists()
    resumed = [r for r in fake.requests[requests_before:] if r.method == method]
    assert resumed[0].params["starting_after"] == cursor  # page 1 is not read again
    if method != "iter_customers":
        assert "customers" in report.phases_done
        assert not any(r.method == "iter_customers" for r in fake.requests[requests_before:])

    assert count(db, Customer) == 5 and count(db, PaymentMethod) == 4
    assert count(db, Subscription) == 5 and count(db, Invoice) == 5
    assert count(db, StripeEvent) == 5


def test_a_rate_limited_sync_slows_down_and_carries_on(
    db: Database, fake: FakeStripeGateway, clock: FrozenClock
) -> None:
    time = SimTime()
    fake.outage(2, kind="rate_limit", after=1, methods={"iter_subscriptions"})
    report = run(db, fake, clock, None, time)
    assert report.completed and report.rate_limit_waits == 2
    assert count(db, Subscription) == 5
    assert [s for s in time.sleeps if s >= 1] == [2.0, 4.0]  # backoff between the attempts
    assert max(s for s in time.sleeps if s < 1) == pytest.approx(1 / 5)  # 20/s halved twice


def test_a_sync_that_stays_rate_limited_stops_and_keeps_its_cursor(
    db: Database, fake: FakeStripeGateway, clock: FrozenClock, tmp_path: Path
) -> None:
    state = tmp_path / "sync-state.json"
    fake.outage(MAX_RATE_LIMIT_WAITS + 1, kind="rate_limit", methods={"iter_subscriptions"})
    with pytest.raises(RateLimited):
        run(db, fake, clock, state)
    assert json.loads(state.read_text())["phases"]["customers"]["done"] is True
    assert run(db, fake, clock, state).completed


def test_an_older_event_processed_after_the_sync_does_not_overwrite_synced_state(
    db: Database, fake: FakeStripeGateway, clock: FrozenClock
) -> None:
    run(db, fake, clock, None)
    sub_id = next(s["id"] for s in fake.store["subscription"].values() if s["status"] == "active")
    open_invoice = next(i for i in fake.store["invoice"].values() if i["status"] == "open")
    cus = fake.retrieve_customer(open_invoice["customer"])

    rules = Rules.load(None)

    rt = Runtime(
        settings=Settings(database_url=db.url),
        rules=rules,
        db=db,
        gateway=fake,
        handlers=HANDLERS,
        clock=clock,
    )

    def ctx(session: Any) -> ProcessingContext:
        return rt.processing_context(session)

    # The events the sync stored (an hour old) and a late webhook from before the sync.
    clock.advance(timedelta(minutes=10))
    with db.transaction() as session:
        stored = list(session.scalars(select(StripeEvent.id)))
    for event_id in stored:
        assert process_stored_event(db, event_id, ctx, clock) == EventStatus.PROCESSED
    stale_sub = sp.subscription(sub_id, cus["id"], status="past_due")
    stale_invoice = {**open_invoice, "attempt_count": 1, "status": "draft"}
    late = [
        sp.event("customer.subscription.updated", stale_sub, NOW - 120),
        sp.event("invoice.updated", stale_invoice, NOW - 60),
    ]
    receive_events(db, [sp.body_of(e) for e in late], ctx, clock)
    with db.transaction() as session:
        subscription = session.get(Subscription, sub_id)
        invoice = session.get(Invoice, open_invoice["id"])
        assert subscription is not None and subscription.status == "active"
        assert invoice is not None and (invoice.status, invoice.attempt_count) == ("open", 2)

    # A newer event still wins: the sync does not freeze the mirror.
    newer = sp.subscription(sub_id, cus["id"], status="canceled")
    receive_events(
        db, [sp.body_of(sp.event("customer.subscription.deleted", newer, NOW + 60))], ctx, clock
    )
    with db.transaction() as session:
        subscription = session.get(Subscription, sub_id)
        assert subscription is not None and subscription.status == "canceled"


def test_progress_bar_and_a_corrupt_state_file(
    db: Database,
    fake: FakeStripeGateway,
    clock: FrozenClock,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    state = tmp_path / "sync-state.json"
    state.write_text("{not json")
    report = sync_from_stripe(
        db,
        fake,
        clock,
        progress=True,
        state_path=state,
        page_size=PAGE,
        sleep=SimTime().sleep,
        monotonic=SimTime().monotonic,
    )
    assert report.completed and not report.resumed
    assert "sync customers" in capsys.readouterr().err


def test_a_refused_cursor_or_another_accounts_state_starts_over(
    db: Database, fake: FakeStripeGateway, clock: FrozenClock, tmp_path: Path
) -> None:
    state = tmp_path / "sync-state.json"
    phases = {"customers": {"cursor": "cus_deleted_since", "done": False}}
    state.write_text(json.dumps({"version": 1, "phases": phases, "livemode": False}))
    report = run(db, fake, clock, state)
    assert report.completed and report.resumed and report.customers == 5

    done = {name: {"cursor": None, "done": True} for name in ("customers", "subscriptions")}
    state.write_text(json.dumps({"version": 1, "phases": done, "livemode": True}))
    report = run(db, fake, clock, state)  # a live-mode state, a test-mode key
    assert not report.resumed and (report.customers, report.subscriptions) == (5, 5)


@pytest.mark.postgres
def test_a_finished_backfill_gathers_planner_statistics_on_postgresql(
    postgres_url: str, fake: FakeStripeGateway, clock: FrozenClock, tmp_path: Path
) -> None:
    """Tables filled from empty are planned as empty until analyzed (autovacuum gets there a
    minute or more later): the backfill analyzes them when it is done."""
    from sqlalchemy import text

    from tests.conftest import _truncate_all

    _truncate_all(postgres_url)
    database = Database(postgres_url)
    analyzed = text(
        "SELECT relname, last_analyze FROM pg_stat_user_tables "
        "WHERE relname IN ('customers', 'invoices', 'payment_methods', 'stripe_events')"
    )
    try:
        with database.reading() as session:
            before = {r.relname: r.last_analyze for r in session.execute(analyzed)}
            started = session.execute(text("SELECT now()")).scalar_one()
        report = run(database, fake, clock, tmp_path / "state.json")
        assert report.completed and report.customers == 5
        with database.reading() as session:
            after = {r.relname: r.last_analyze for r in session.execute(analyzed)}
        assert set(after) == {"customers", "invoices", "payment_methods", "stripe_events"}
        for table, when in after.items():
            assert when is not None and when >= started, (table, before.get(table), when)
    finally:
        database.dispose()
        _truncate_all(postgres_url)
