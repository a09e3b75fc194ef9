"""Storing a chunk of deliveries (inbox.store_events: the replay, the demo, `receive_events`):
each event once, byte for byte, in the caller's transaction - on PostgreSQL through the webhook
path's own INSERT (ingest.insert_rows), on SQLite through SQLAlchemy."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text

from recovery.db import Database
from recovery.models import EventStatus, StripeEvent
from recovery.services.events import inbox
from recovery.services.events.inbox import RECEIVE_CHUNK, parse_event, store_events
from tests.support import stripe_payloads as sp

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def _delivery(n: int, pad: int = 0) -> tuple[inbox.ParsedEvent, bytes]:
    customer = sp.customer(f"cus_{n}")
    if pad:  # a body over PostgreSQL's TOAST threshold, as most of Stripe's are
        customer["metadata"] = {"notes": "x" * pad}
    body = sp.body_of(sp.event("customer.created", customer, 1_790_000_000 + n))
    return parse_event(body)[0], body


def _stored(db: Database) -> dict[str, tuple[str, str, datetime]]:
    with db.reading() as session:
        rows = session.execute(
            select(StripeEvent.id, StripeEvent.payload, StripeEvent.status, StripeEvent.received_at)
        )
        return {r.id: (r.payload, r.status, r.received_at) for r in rows}


def test_each_event_is_stored_once_byte_for_byte(database_url: str) -> None:
    db = Database(database_url)
    try:
        a, b, c = _delivery(1), _delivery(2), _delivery(3)
        with db.transaction() as session:
            assert store_events(session, [c], NOW) == [True]
        with db.transaction() as session:
            # a repeat within the chunk and an event stored before are not new
            assert store_events(session, [a, b, a, c], NOW) == [True, True, False, False]
        stored = _stored(db)
        assert set(stored) == {a[0].id, b[0].id, c[0].id}
        for event, body in (a, b, c):
            payload, status, received = stored[event.id]
            assert payload == body.decode()  # as signed: the raw body, not re-serialized
            assert status == EventStatus.PENDING
            assert received == NOW
    finally:
        db.dispose()


def test_stored_events_roll_back_with_their_transaction(database_url: str) -> None:
    """The INSERT is the transaction's first statement here: it must not commit on its own."""
    db = Database(database_url)
    try:
        with pytest.raises(RuntimeError), db.transaction() as session:
            assert store_events(session, [_delivery(1), _delivery(2)], NOW) == [True, True]
            raise RuntimeError("the batch failed after storing")
        assert _stored(db) == {}
        with db.transaction() as session:  # and the next transaction stores them as new
            assert store_events(session, [_delivery(1), _delivery(2)], NOW) == [True, True]
        assert len(_stored(db)) == 2
    finally:
        db.dispose()


def test_full_chunks_again_and_again_on_one_connection(database_url: str) -> None:
    """Chunk after chunk on one connection, and a chunk of events stored before."""
    db = Database(database_url)
    try:
        deliveries = [_delivery(n) for n in range(3 * RECEIVE_CHUNK)]
        for start in range(0, len(deliveries), RECEIVE_CHUNK):
            chunk = deliveries[start : start + RECEIVE_CHUNK]
            with db.transaction() as session:
                assert store_events(session, chunk, NOW) == [True] * RECEIVE_CHUNK
        with db.transaction() as session:  # a full chunk of events already stored
            assert store_events(session, deliveries[:RECEIVE_CHUNK], NOW) == [False] * 100
        assert len(_stored(db)) == 3 * RECEIVE_CHUNK
    finally:
        db.dispose()


@pytest.mark.postgres
def test_large_bodies_are_compressed_with_lz4_on_postgresql(postgres_url: str) -> None:
    db = Database(postgres_url)
    try:
        with db.reading() as session:
            values = session.execute(
                text("SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'")
            ).scalar()
        if "lz4" not in (values or []):
            pytest.skip("this PostgreSQL server was built without LZ4 (migration 0023 skips)")
        event, body = _delivery(7, pad=4_000)
        with db.transaction() as session:
            session.execute(text("DELETE FROM stripe_events"))
            assert store_events(session, [(event, body)], NOW) == [True]
        with db.reading() as session:
            method, payload = session.execute(
                text("SELECT pg_column_compression(payload), payload FROM stripe_events")
            ).one()
        assert method == "lz4"
        assert json.loads(payload) == json.loads(body) and payload == body.decode()
    finally:
        db.dispose()
