"""Cancelling a case's pending messages cancels their send actions too (one statement for all of
them), and nothing else: a sent message, a confirmation and another case's reminder keep
theirs. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from recovery.adapters.clock import FrozenClock
from recovery.models import DueAction, OutboxMessage
from recovery.runtime import Runtime
from recovery.services.messaging import outbox


def _enqueue(rt: Runtime, clock: FrozenClock, about: str, key: str, step: str) -> None:
    with rt.db.transaction() as s:
        outbox.enqueue(
            s,
            about=about,
            case_id=None,
            customer_id="cus_1",
            channel="email",
            template="soft_decline",
            step=step,
            locale="en",
            recipient="ada@example.com",
            subject="Your payment",
            body="Hello",
            send_after=clock.now() + timedelta(days=1),
            dedupe_key=key,
            now=clock.now(),
        )


def test_cancel_stops_each_pending_message_and_its_send_action_only(
    runtime: Runtime, clock: FrozenClock
) -> None:
    for key, about, step in (
        ("a0", "case:1", "soft.0"),
        ("a1", "case:1", "soft.1"),
        ("a2", "case:1", "soft.2"),
        ("thanks", "case:1", outbox.CONFIRMATION),
        ("b0", "case:2", "soft.0"),
    ):
        _enqueue(runtime, clock, about, key, step)
    with runtime.db.transaction() as s:  # the first went out already
        sent = s.scalars(select(OutboxMessage).where(OutboxMessage.dedupe_key == "a0")).one()
        sent.status = "sent"
    with runtime.db.transaction() as s:
        assert outbox.cancel(s, "case:1", clock.now()) == 2
    with runtime.db.transaction() as s:
        messages = {m.dedupe_key: m.status for m in s.scalars(select(OutboxMessage))}
        actions = {a.dedupe_key: a.status for a in s.scalars(select(DueAction))}
    assert messages == {
        "a0": "sent",
        "a1": "cancelled",
        "a2": "cancelled",
        "thanks": "pending",
        "b0": "pending",
    }
    assert actions == {
        "outbox:a0": "pending",  # its message is not pending: the send action decides alone
        "outbox:a1": "cancelled",
        "outbox:a2": "cancelled",
        "outbox:thanks": "pending",
        "outbox:b0": "pending",
    }
    with runtime.db.transaction() as s:  # nothing pending is left: a second cancel is a no-op
        assert outbox.cancel(s, "case:1", clock.now()) == 0
