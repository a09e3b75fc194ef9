"""Retention deletes only what nothing needs: after the daily job, every case's timeline and
details and the dashboard's figures are exactly what they were, and what it removed is old,
finished, and about no case."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta
from typing import Any

from sqlalchemy import func, select

from recovery.adapters.clock import FrozenClock
from recovery.adapters.stripe_fake import FakeStripeGateway
from recovery.models import (
    ActionStatus,
    DueAction,
    EventStatus,
    MessageStatus,
    OutboxMessage,
    RecoveryCase,
    StripeEvent,
)
from recovery.runtime import Runtime
from recovery.services.cases import desk, records
from recovery.services.events import inbox
from recovery.services.reporting import metrics
from recovery.services.work import retention
from recovery.worker import Worker
from tests.support import stripe_payloads as sp
from tests.support.scenario import Story


def _message(about: str, status: str, at: Any, key: str, customer: str | None = None) -> Any:
    return OutboxMessage(
        about=about,
        customer_id=customer,
        channel="email",
        template="card_expiring",
        step="expiring.0",
        locale="en",
        recipient="kim@example.com",
        subject="s",
        body="b",
        send_after=at,
        dedupe_key=key,
        status=status,
        attempts=1,
        created_at=at,
        sent_at=at if status == MessageStatus.SENT else None,
        finished_at=at,
    )


def _what_people_see(rt: Runtime, clock: FrozenClock) -> dict[str, Any]:
    with rt.db.transaction() as s:
        case_ids = list(s.scalars(select(RecoveryCase.id).order_by(RecoveryCase.id)))
    seen: dict[str, Any] = {}
    for case_id in case_ids:
        found = desk.story(rt, case_id)
        assert found is not None
        story, _available = found
        seen[f"timeline {case_id}"] = [
            (line.at, line.source, line.kind, line.summary, line.note, line.children)
            for line in story.lines
        ]
        seen[f"details {case_id}"] = records.case_detail(rt, case_id)
    for first, last in (
        (date(2026, 1, 1), date(2028, 1, 1)),
        (date(2026, 11, 1), date(2027, 1, 1)),
    ):
        period = metrics.period_of(first, last)
        for currency in ("usd", "eur"):
            figures = metrics.overview(rt, *period, currency, clock.now())
            seen[f"overview {first} {currency}"] = dataclasses.asdict(figures)
    return seen


def _count(rt: Runtime, model: Any, *where: Any) -> int:
    with rt.db.transaction() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def test_retention_keeps_every_timeline_and_figure(
    runtime: Runtime, fake_gateway: FakeStripeGateway, clock: FrozenClock
) -> None:
    story = Story(runtime, fake_gateway, clock)
    recovered, lost, no_case = story.customer(), story.customer(), story.customer()
    story.deliver()
    story.stripe_charges(recovered.invoice, decline_code="insufficient_funds")
    story.stripe_charges(lost.invoice, decline_code="stolen_card")
    story.stripe_charges(no_case.invoice)  # paid at once: events, and no case
    for _ in range(40):  # the month runs: retries, reminders, the end of dunning
        if not story.advance_to_next_due(limit=timedelta(days=40)):
            break
    old = clock.now()
    with runtime.db.transaction() as s:
        s.add(_message("expiry:sub_x:pm_x", MessageStatus.SENT, old, "exp-sent", no_case.customer))
        s.add(_message("expiry:sub_y:pm_y", MessageStatus.CANCELLED, old, "exp-cancelled"))
        s.add(_message("cancel_session:cs_1", MessageStatus.SENT, old, "cancel-sent"))
        s.add(_message("cancel_session:cs_2", MessageStatus.FAILED, old, "cancel-failed"))

    clock.advance(timedelta(days=100))
    fresh = story.customer()  # the last 90 days: kept whatever it is
    story.deliver()
    now = int(clock.now().timestamp())
    parked = sp.event("invoice.payment_failed", sp.invoice("in_parked", "cus_p", "sub_p"), now)
    story.rt.handlers = story.rt.handlers.with_reaction("invoice.payment_failed", _boom)
    inbox.receive_events(runtime.db, [sp.body_of(parked)], runtime.processing_context, clock)

    before = _what_people_see(runtime, clock)
    events_before = _count(runtime, StripeEvent)
    assert retention.JOB_NAME in Worker(runtime).run_daily_jobs()
    assert _what_people_see(runtime, clock) == before

    # What went: old processed events about no case's invoice or payment, ...
    assert _count(runtime, StripeEvent) < events_before
    assert _count(runtime, StripeEvent, StripeEvent.object_id == no_case.invoice) == 0
    assert _count(runtime, StripeEvent, StripeEvent.object_id == recovered.invoice) > 0
    assert _count(runtime, StripeEvent, StripeEvent.object_id == lost.invoice) > 0
    assert _count(runtime, StripeEvent, StripeEvent.object_id == fresh.customer) > 0
    assert _count(runtime, StripeEvent, StripeEvent.status == EventStatus.PENDING) == 1
    # ... old actions done without an error, ...
    assert _count(runtime, DueAction, DueAction.created_at < old, DueAction.status == "done") == 0
    assert _count(runtime, DueAction, DueAction.status == ActionStatus.FAILED) == _count(
        runtime, DueAction, DueAction.status == ActionStatus.FAILED, DueAction.created_at < old
    )
    # ... and old messages of no case, except the expiry notices the dashboard counts.
    with runtime.db.transaction() as s:
        keys = set(s.scalars(select(OutboxMessage.dedupe_key)))
    assert {"exp-sent", "cancel-failed"} <= keys
    assert not {"exp-cancelled", "cancel-sent"} & keys
    with runtime.db.transaction() as s:
        case_messages = s.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.case_id.is_not(None))
        )
    assert case_messages and case_messages > 0  # every case's messages stay

    # Run again the same day: nothing more to do; the next day, nothing left to delete.
    assert retention.JOB_NAME not in Worker(runtime).run_daily_jobs()
    clock.advance(timedelta(days=1))
    assert retention.purge(runtime, clock.now(), 90) == {
        "stripe_events": 0,
        "due_actions": 0,
        "outbox_messages": 0,
    }


def _boom(ctx: Any, event: Any, obj: Any) -> None:
    raise RuntimeError("a bug: this event stays pending")
