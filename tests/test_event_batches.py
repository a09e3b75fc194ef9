"""Events are processed in batches: one transaction, a savepoint per event. Each event sees
what the ones before it wrote, a bad one is parked alone, workers split the pending events
between them, a new event is processed within a second of arriving, and the planners that
depend on one kind of state run only when it moved."""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from recovery.adapters.clock import FrozenClock
from recovery.adapters.stripe.errors import CardDeclined
from recovery.adapters.stripe_fake import FakeStripeGateway
from recovery.models import Customer, EventStatus, StripeEvent
from recovery.runtime import Runtime
from recovery.services.events import inbox, ingest
from recovery.services.messaging import expiry, outbox
from recovery.services.registry import build_runtime
from recovery.worker import Worker
from tests.conftest import WEBHOOK_SECRET, make_settings
from tests.support import stripe_payloads as sp
from tests.support.scenario import Story


def _statuses(rt: Runtime) -> dict[str, tuple[str, int]]:
    with rt.db.transaction() as s:
        rows = s.execute(select(StripeEvent.id, StripeEvent.status, StripeEvent.attempts))
        return {r.id: (r.status, r.attempts) for r in rows}


def test_each_event_of_a_batch_sees_what_the_ones_before_it_wrote(
    runtime: Runtime, fake_gateway: FakeStripeGateway, clock: FrozenClock
) -> None:
    story = Story(runtime, fake_gateway, clock)
    b = story.customer()
    story.deliver()
    fake_gateway.fail_next_payment(b.invoice, "generic_decline")
    with pytest.raises(CardDeclined):  # the renewal fails: a case opens ...
        fake_gateway.pay_invoice(b.invoice, idempotency_key="renewal")
    clock.advance(timedelta(minutes=5))
    fake_gateway.pay_invoice(b.invoice, idempotency_key="customer-paid")  # ... and is paid
    assert story.deliver() > 4  # all of it in one batch
    # In one transaction, the failure's reaction opened the case on the open invoice, and the
    # payment's reaction read the paid invoice its own event mirrored.
    assert story.case(b.invoice).status == "recovered"


def test_a_bad_event_is_parked_alone_and_the_rest_of_its_batch_commits(runtime: Runtime) -> None:
    def boom(ctx: Any, event: Any, obj: Any) -> None:
        if obj.get("id") == "cus_2":
            raise RuntimeError("a bug")

    runtime.handlers = runtime.handlers.with_reaction("customer.created", boom)
    now = int(runtime.clock.now().timestamp())
    events = [sp.event("customer.created", sp.customer(f"cus_{i}"), now + i) for i in range(1, 4)]
    inbox.receive_events(
        runtime.db, [sp.body_of(e) for e in events], runtime.processing_context, runtime.clock
    )
    statuses = _statuses(runtime)
    assert [statuses[str(e["id"])] for e in events] == [
        (EventStatus.PROCESSED, 1),
        (EventStatus.PENDING, 1),
        (EventStatus.PROCESSED, 1),
    ]
    with runtime.db.transaction() as s:
        mirrored = set(s.scalars(select(Customer.id)))
    assert mirrored == {"cus_1", "cus_3"}  # the bad one's mirror write rolled back with it


@pytest.mark.postgres
def test_workers_split_the_pending_events_each_once(
    postgres_url: str, tmp_path: Path, clock: FrozenClock
) -> None:
    from tests.conftest import _truncate_all

    _truncate_all(postgres_url)
    runtimes = [
        build_runtime(
            make_settings(postgres_url, tmp_path), clock=clock, gateway=FakeStripeGateway()
        )
        for _ in range(2)
    ]
    now = int(clock.now().timestamp())
    for i in range(600):
        evt = sp.event("customer.created", sp.customer(f"cus_{i:04d}"), now + i)
        parsed, _ = inbox.parse_event(sp.body_of(evt))
        inbox.ingest(runtimes[0].db, parsed, sp.body_of(evt), clock.now())
    counts = [0, 0]

    def work(n: int) -> None:
        rt = runtimes[n]
        while True:
            claimed = inbox.process_pending(rt.db, rt.processing_context, clock, limit=50)
            counts[n] += claimed
            if not claimed:
                return

    threads = [threading.Thread(target=work, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sum(counts) == 600 and min(counts) > 0, counts
    assert set(_statuses(runtimes[0]).values()) == {(EventStatus.PROCESSED, 1)}
    with runtimes[0].db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(Customer)) == 600
    for rt in runtimes:
        rt.db.dispose()
    _truncate_all(postgres_url)


def _wait_processed(rt: Runtime, event_id: str, timeout: float = 10.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if _statuses(rt).get(event_id, ("",))[0] == EventStatus.PROCESSED:
            return time.monotonic() - started
        time.sleep(0.02)
    raise AssertionError(f"{event_id} was not processed within {timeout} s")


def test_a_new_event_is_processed_within_a_second_not_at_the_next_tick(
    runtime: Runtime, client: Any
) -> None:
    runtime.settings = dataclasses.replace(runtime.settings, worker_tick_seconds=30.0)
    worker = Worker(runtime)
    worker.start(blocking=False)
    try:
        time.sleep(0.2)  # the worker's first look at the inbox, with nothing in it
        now = int(runtime.clock.now().timestamp())
        evt = sp.event("customer.created", sp.customer("cus_W"), now)
        body = sp.body_of(evt)
        started = time.monotonic()
        resp = client.post(
            "/webhooks/stripe",
            data=body,
            headers={"Stripe-Signature": sp.signature_header(body, WEBHOOK_SECRET, now)},
        )
        assert resp.status_code == 200
        _wait_processed(runtime, str(evt["id"]))
        assert time.monotonic() - started < 1.0
    finally:
        worker.stop()


@pytest.mark.postgres
def test_notify_wakes_a_worker_of_another_process(
    postgres_url: str, tmp_path: Path, clock: FrozenClock
) -> None:
    """The webhook's insert NOTIFYs: a worker elsewhere (here: one that never hears this
    process's in-process wake-up, and ticks every 30 s) processes the event at once."""
    from tests.conftest import _truncate_all

    _truncate_all(postgres_url)
    settings = make_settings(postgres_url, tmp_path, worker_tick_seconds=30.0)
    rt = build_runtime(settings, clock=clock, gateway=FakeStripeGateway())
    worker = Worker(rt)
    worker.start(blocking=False)
    try:
        time.sleep(0.5)  # LISTEN is in place, the first look at the inbox done
        inbox.arrived.clear()
        now = int(clock.now().timestamp())
        evt = sp.event("customer.created", sp.customer("cus_N"), now)
        parsed, _ = inbox.parse_event(sp.body_of(evt))
        row = ingest.row_of(parsed, sp.body_of(evt), clock.now())
        started = time.monotonic()
        raw = rt.db.engine.raw_connection()  # the ingest statement alone: no in-process flag
        try:
            ingest.insert_rows(raw.driver_connection, [row])
            raw.commit()
        finally:
            raw.close()
        _wait_processed(rt, str(evt["id"]))
        assert time.monotonic() - started < 1.0
    finally:
        worker.stop()
        rt.db.dispose()
        _truncate_all(postgres_url)


def test_the_expiry_planner_runs_only_when_a_card_or_renewal_moved(
    runtime: Runtime, fake_gateway: FakeStripeGateway, clock: FrozenClock, monkeypatch: Any
) -> None:
    calls: list[str] = []
    real = expiry.on_card_change

    def counting(ctx: Any, event: Any, obj: Any) -> None:
        calls.append(str(event["type"]))
        real(ctx, event, obj)

    monkeypatch.setattr(expiry, "on_card_change", counting)
    story = Story(runtime, fake_gateway, clock)
    b = story.customer()
    story.deliver()
    assert calls == []  # a new card, but no notice pending for the customer: nothing to cancel
    with runtime.db.transaction() as s:  # the daily scan planned one
        outbox.enqueue(
            s,
            about=f"expiry:{b.subscription}:{b.payment_method}",
            case_id=None,
            customer_id=b.customer,
            channel="email",
            template="card_expiring",
            step="expiring.0",
            locale="en",
            recipient="kim@example.com",
            subject="Your card expires",
            body="...",
            send_after=clock.now() + timedelta(days=3),
            dedupe_key="expiry-notice",
            now=clock.now(),
        )

    clock.advance(timedelta(seconds=5))
    customer = fake_gateway.retrieve_customer(b.customer)
    fake_gateway.put({**customer, "name": "Kim Other"})
    fake_gateway.add_event("customer.updated", fake_gateway.retrieve_customer(b.customer))
    story.deliver()
    assert calls == []  # a new name: nothing the planner reads

    clock.advance(timedelta(seconds=5))
    pm = fake_gateway.add_payment_method(b.customer, brand="mastercard")
    fake_gateway.update_customer_default_payment_method(b.customer, pm["id"], idempotency_key="d")
    story.deliver()
    assert "customer.updated" in calls  # a new default card, and a notice that may be stale

    calls.clear()
    # The name change again, as an older Event object arriving late: stale, nothing moved.
    renamed = next(e for e in fake_gateway.events if e["data"]["object"].get("name") == "Kim Other")
    late = {**renamed, "id": "evt_late_twin"}
    inbox.receive_events(runtime.db, [sp.body_of(late)], runtime.processing_context, clock)
    assert _statuses(runtime)["evt_late_twin"] == (EventStatus.PROCESSED, 1)
    assert calls == []
    with runtime.db.transaction() as s:
        customer_row = s.get(Customer, b.customer)
        assert customer_row is not None and customer_row.default_payment_method_id == pm["id"]
