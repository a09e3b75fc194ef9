"""The Database unit-of-work helpers: what readers and writers may expect of each other."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from recovery.db import Database
from recovery.models import EventStatus, StripeEvent

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def _event(event_id: str) -> StripeEvent:
    return StripeEvent(
        id=event_id,
        type="customer.created",
        created=1_700_000_000,
        livemode=False,
        payload="{}",
        received_at=NOW,
        status=EventStatus.PENDING,
        attempts=0,
        next_attempt_at=NOW,
    )


def test_a_long_read_does_not_block_a_writer(database_url: str) -> None:
    """A dashboard query that is still open must not stall webhooks: on SQLite a writer
    would wait for the write lock a BEGIN IMMEDIATE reader holds (and time out after 10 s)."""
    db = Database(database_url)
    try:
        with db.reading() as reader:
            assert reader.scalar(select(func.count()).select_from(StripeEvent)) == 0
            with db.transaction() as writer:  # would block here if the reader held the lock
                writer.add(_event("evt_written_during_a_read"))
        with db.reading() as reader:
            assert reader.get(StripeEvent, "evt_written_during_a_read") is not None
    finally:
        db.dispose()


def test_writing_in_a_read_only_unit_of_work_is_refused(database_url: str) -> None:
    db = Database(database_url)
    try:
        with pytest.raises(RuntimeError, match="read-only"), db.reading() as reader:
            reader.add(_event("evt_not_to_be_written"))
        with db.reading() as reader:
            assert reader.get(StripeEvent, "evt_not_to_be_written") is None
    finally:
        db.dispose()
