"""A subscription's items are written only when they changed: a batch with several states of
subscriptions reads the items the database holds for them (services/events/mirror_batch.py),
and an update that restates them (most do: a status moved, the items did not) writes none.
Whatever the batch skips, the items stored are those of the newest state, in one batch or
across batches, with or without a failed event in the batch."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, select, text

from recovery.models import StripeEvent, SubscriptionItem
from recovery.runtime import Runtime
from recovery.services.events import inbox
from tests.support import stripe_payloads as sp

SUB, CUSTOMER = "sub_items000001", "cus_items"
START_TS = 1_700_000_000
MONTH = 2_592_000


def _sub(period: int, *, status: str = "active", unit_amount: int = 2000) -> dict[str, Any]:
    start = START_TS + period * MONTH
    return sp.subscription(
        SUB,
        CUSTOMER,
        status=status,
        unit_amount=unit_amount,
        period_start=start,
        period_end=start + MONTH,
    )


def _deliver(rt: Runtime, events: list[dict[str, Any]]) -> None:
    inbox.receive_events(rt.db, [sp.body_of(e) for e in events], rt.processing_context, rt.clock)


def _items(rt: Runtime) -> list[tuple[Any, ...]]:
    with rt.db.transaction() as s:
        rows = s.execute(
            select(
                SubscriptionItem.id,
                SubscriptionItem.unit_amount,
                SubscriptionItem.current_period_start,
            ).where(SubscriptionItem.subscription_id == SUB)
        )
        return [(r[0], r[1], int(r[2].timestamp()) if r[2] else None) for r in rows]


@contextmanager
def _item_writes(rt: Runtime) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.split()[:3] in (["DELETE", "FROM", "subscription_items"],) or (
            statement.startswith("INSERT INTO subscription_items")
        ):
            seen.append(statement.split()[0])

    event.listen(rt.db.engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(rt.db.engine, "before_cursor_execute", count)


def test_restated_items_are_not_written_again_and_the_newest_win(runtime: Runtime) -> None:
    now = int(runtime.clock.now().timestamp())
    customer = sp.event("customer.created", sp.customer(CUSTOMER), now)
    created = sp.event("customer.subscription.created", _sub(0), now + 1)
    _deliver(runtime, [customer, created])
    assert _items(runtime) == [(f"si_{SUB[-12:]}", 2000, START_TS)]

    with _item_writes(runtime) as writes:  # a status moves, the items are restated as they are
        _deliver(
            runtime,
            [
                sp.event("customer.subscription.updated", _sub(0), now + 2),
                sp.event("customer.subscription.updated", _sub(0, status="past_due"), now + 3),
            ],
        )
    assert writes == []  # (a batch with one state writes it at once: a read would not pay)
    assert _items(runtime) == [(f"si_{SUB[-12:]}", 2000, START_TS)]

    with _item_writes(runtime) as writes:  # in one batch: restated, renewed, restated, repriced
        _deliver(
            runtime,
            [
                sp.event("customer.subscription.updated", _sub(0), now + 4),
                sp.event("customer.subscription.updated", _sub(1), now + 5),
                sp.event("customer.subscription.updated", _sub(1), now + 6),
                sp.event("customer.subscription.updated", _sub(1, unit_amount=2500), now + 7),
            ],
        )
    assert writes  # what moved is written
    assert _items(runtime) == [(f"si_{SUB[-12:]}", 2500, START_TS + MONTH)]

    # Older states delivered late write nothing over the newest.
    _deliver(runtime, [sp.event("customer.subscription.updated", _sub(0), now + 1)])
    assert _items(runtime) == [(f"si_{SUB[-12:]}", 2500, START_TS + MONTH)]


def test_items_follow_the_newest_state_when_the_batch_runs_event_by_event(
    runtime: Runtime,
) -> None:
    def boom(ctx: Any, event: Any, obj: Any) -> None:
        if obj.get("id") == "cus_bad":
            raise RuntimeError("a bug")

    runtime.handlers = runtime.handlers.with_reaction("customer.created", boom)
    now = int(runtime.clock.now().timestamp())
    _deliver(
        runtime,
        [
            sp.event("customer.created", sp.customer(CUSTOMER), now),
            sp.event("customer.subscription.created", _sub(0), now + 1),
        ],
    )
    # A failing event sends the batch down the careful path (a savepoint per event): there a
    # write may be rolled back alone, so the batch trusts only what it read.
    _deliver(
        runtime,
        [
            sp.event("customer.subscription.updated", _sub(1), now + 2),
            sp.event("customer.created", sp.customer("cus_bad"), now + 3),
            sp.event("customer.subscription.updated", _sub(1), now + 4),
            sp.event("customer.subscription.updated", _sub(2, unit_amount=900), now + 5),
        ],
    )
    assert _items(runtime) == [(f"si_{SUB[-12:]}", 900, START_TS + 2 * MONTH)]


@pytest.fixture(autouse=True)
def _no_stray_items(runtime: Runtime) -> Iterator[None]:
    yield
    with runtime.db.transaction() as s:  # never an item of another subscription's id
        subs = set(s.scalars(select(SubscriptionItem.subscription_id)))
    assert subs <= {SUB}


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_row_the_database_refuses_parks_its_event_alone(runtime: Runtime) -> None:
    """PostgreSQL refuses a row of the batch's one-round-trip write (here a constraint the test
    adds; in life a value the mapping let through): the batch runs again event by event, the
    bad event is retried later, the others are processed with their rows. (Before, the careful
    run's write of the mirror-only events failed the same way and its events, replayed one by
    one, found their rows "stored" in the batch's memory: all four were marked processed and
    the bad one's and the next ones' rows were never written.)"""
    refused = "ALTER TABLE subscription_items ADD CONSTRAINT test_refused CHECK (price_id <> 'no')"
    with runtime.db.transaction() as s:
        s.execute(text(refused))
    try:
        now = int(runtime.clock.now().timestamp())
        bad = sp.subscription("sub_refused0001", CUSTOMER, price_id="no")
        events = [
            sp.event("customer.created", sp.customer(CUSTOMER), now),
            sp.event("customer.subscription.created", _sub(0), now + 1),
            sp.event("customer.subscription.created", bad, now + 2),
            sp.event("customer.subscription.updated", _sub(1), now + 3),
        ]
        _deliver(runtime, events)
        with runtime.db.transaction() as s:
            rows = s.execute(select(StripeEvent.id, StripeEvent.status, StripeEvent.last_error))
            status = {r.id: (r.status, r.last_error or "") for r in rows}
    finally:
        with runtime.db.transaction() as s:
            s.execute(text("ALTER TABLE subscription_items DROP CONSTRAINT test_refused"))
    assert [status[str(e["id"])][0] for e in events] == [
        "processed",
        "processed",
        "pending",
        "processed",
    ]
    assert "IntegrityError" in status[str(events[2]["id"])][1]
    assert _items(runtime) == [(f"si_{SUB[-12:]}", 2000, START_TS + MONTH)]
