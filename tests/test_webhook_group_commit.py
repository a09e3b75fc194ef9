"""The webhook's group commit on PostgreSQL (services/events/ingest.py): requests arriving while
one write is in progress are stored together by the next single statement, each answered only
after the commit that holds its row; duplicates within a batch are stored once; a failed write
answers 503 to every request in it and stores none of them; a request kept waiting past the
deadline is a 503 and is not stored.

To line requests up behind a write, a test holds an uncommitted row with the id the write
inserts: PostgreSQL makes the INSERT wait for that transaction, as it would for a slow disk.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from recovery.adapters.clock import FrozenClock
from recovery.adapters.stripe_fake import FakeStripeGateway
from recovery.app import create_app
from recovery.models import StripeEvent
from recovery.runtime import Runtime
from recovery.services.events import ingest
from recovery.services.registry import build_runtime
from tests.conftest import WEBHOOK_SECRET, _truncate_all, make_settings
from tests.support import stripe_payloads as sp

pytestmark = pytest.mark.postgres

Answer = tuple[int, dict[str, Any]]


@pytest.fixture
def served(
    postgres_url: str, tmp_path: Path, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Any, Runtime]]:
    # A held row keeps the writer waiting as long as the test needs, on a busy machine too.
    monkeypatch.setattr(ingest, "STATEMENT_TIMEOUT_MS", 60_000)
    _truncate_all(postgres_url)
    rt = build_runtime(
        make_settings(postgres_url, tmp_path), clock=clock, gateway=FakeStripeGateway()
    )
    yield create_app(runtime=rt), rt
    rt.db.dispose()
    _truncate_all(postgres_url)


def conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def held(url: str, event_id: str) -> Iterator[psycopg.Connection[Any]]:
    """An uncommitted row with this id: an INSERT of the same id waits until it rolls back."""
    with psycopg.connect(conninfo(url)) as conn:
        conn.execute(
            "INSERT INTO stripe_events (id, type, created, livemode, payload, received_at, "
            "status, attempts, next_attempt_at) "
            "VALUES (%s, 'x', 0, false, '{}', now(), 'processed', 0, now())",
            [event_id],
        )
        try:
            yield conn
        finally:
            conn.rollback()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        pause.wait(0.01)


def writers_waiting_on_a_row(url: str) -> int:
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else 0


def body(rt: Runtime, event_id: str) -> bytes:
    now = int(rt.clock.now().timestamp())
    return sp.body_of(
        sp.event("customer.created", sp.customer(f"cus_{event_id}"), now, event_id=event_id)
    )


def post(app: Any, rt: Runtime, data: bytes) -> Answer:
    now = int(rt.clock.now().timestamp())
    headers = {
        "Content-Type": "application/json",
        "Stripe-Signature": sp.signature_header(data, WEBHOOK_SECRET, now),
    }
    resp = app.test_client().post("/webhooks/stripe", data=data, headers=headers)
    return resp.status_code, resp.get_json()


def stored_ids(rt: Runtime) -> list[str]:
    with rt.db.transaction() as session:
        return list(session.scalars(select(StripeEvent.id).order_by(StripeEvent.id)))


def test_requests_waiting_behind_a_write_share_one_statement_and_duplicates_are_stored_once(
    served: tuple[Any, Runtime], postgres_url: str
) -> None:
    app, rt = served
    committer = ingest.group_commit(rt.db)
    assert post(app, rt, body(rt, "evt_before")) == (
        200,
        {"received": True, "duplicate": False, "status": "pending"},
    )
    unique = [body(rt, f"evt_gc_{n}") for n in range(6)]
    # Stripe delivering an event twice at once, and again one stored earlier.
    queued = [*unique, unique[0], unique[3], unique[3], body(rt, "evt_before")]
    with ThreadPoolExecutor(max_workers=len(queued) + 1) as pool:
        with held(postgres_url, "evt_gc_first"):
            first = pool.submit(post, app, rt, body(rt, "evt_gc_first"))
            wait_for(lambda: writers_waiting_on_a_row(postgres_url) == 1, "the first write")
            answers: list[Future[Answer]] = [pool.submit(post, app, rt, b) for b in queued]
            wait_for(lambda: committer.waiting() == len(queued), "the requests to queue")
            batches, rows = committer.batches, committer.rows
            assert not first.done() and not any(a.done() for a in answers)  # nothing committed
        assert first.result(timeout=30)[0] == 200
        results = [a.result(timeout=30) for a in answers]
    assert committer.batches == batches + 2  # the first write, then everything that waited
    assert committer.rows == rows + 1 + len(queued)
    assert all(status == 200 for status, _ in results)
    new = [queued[i] for i, (_, answer) in enumerate(results) if not answer["duplicate"]]
    assert sorted(new) == sorted(unique)  # each new event acknowledged as new exactly once
    assert [answer["duplicate"] for _, answer in results[len(unique) :]] == [True] * 4
    assert stored_ids(rt) == sorted(
        ["evt_before", "evt_gc_first", *(f"evt_gc_{n}" for n in range(6))]
    )


def test_a_failed_write_answers_503_to_each_request_in_it_and_stores_none(
    served: tuple[Any, Runtime], postgres_url: str
) -> None:
    app, rt = served
    committer = ingest.group_commit(rt.db)
    victims = [body(rt, "evt_gc_victim"), *(body(rt, f"evt_gc_{n}") for n in range(4))]
    pool = ThreadPoolExecutor(max_workers=len(victims) + 1)
    with (
        pool,
        held(postgres_url, "evt_gc_first") as first_lock,
        held(postgres_url, "evt_gc_victim"),
    ):
        first = pool.submit(post, app, rt, body(rt, "evt_gc_first"))
        wait_for(lambda: writers_waiting_on_a_row(postgres_url) == 1, "the first write")
        answers = [pool.submit(post, app, rt, b) for b in victims]
        wait_for(lambda: committer.waiting() == len(victims), "the requests to queue")
        first_lock.rollback()  # the first write goes through; the next waits on the victim
        assert first.result(timeout=30)[0] == 200
        wait_for(lambda: committer.waiting() == 0, "the second write to start")
        wait_for(lambda: writers_waiting_on_a_row(postgres_url) == 1, "the second write")
        # The database ends the writer's session mid-statement (a restart, a failover).
        first_lock.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        results = [a.result(timeout=30) for a in answers]
    assert [status for status, _ in results] == [503] * len(victims)
    assert {answer["error"]["code"] for _, answer in results} == {"database_unavailable"}
    assert stored_ids(rt) == ["evt_gc_first"]  # none of the failed write's rows
    # Stripe delivers them again: a fresh connection stores them, each new.
    again = [post(app, rt, b) for b in victims]
    assert [(status, answer["duplicate"]) for status, answer in again] == [(200, False)] * 5


def test_a_request_kept_waiting_past_the_deadline_is_a_503_and_not_stored(
    served: tuple[Any, Runtime], postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, rt = served
    monkeypatch.setattr(ingest, "DEADLINE_SECONDS", 0.2)
    with ThreadPoolExecutor(max_workers=2) as pool:
        with held(postgres_url, "evt_gc_first"):
            first = pool.submit(post, app, rt, body(rt, "evt_gc_first"))
            wait_for(lambda: writers_waiting_on_a_row(postgres_url) == 1, "the first write")
            status, answer = post(app, rt, body(rt, "evt_gc_late"))
            assert status == 503 and answer["error"]["code"] == "database_unavailable"
        assert first.result(timeout=30)[0] == 200
    assert stored_ids(rt) == ["evt_gc_first"]  # it left the queue unwritten: Stripe retries it


def test_a_value_the_database_refuses_fails_only_its_own_request(
    served: tuple[Any, Runtime], postgres_url: str
) -> None:
    """parse_event keeps a NUL out; were one to reach the statement, the batch's other rows
    are still stored, each alone."""
    _, rt = served
    committer = ingest.group_commit(rt.db)
    now = rt.clock.now()

    def row(event_id: str, event_type: str = "customer.created") -> ingest.Row:
        event = ingest.ParsedEvent(event_id, event_type, 1, None, False, None)
        return ingest.row_of(event, b"{}", now)

    rows = [row("evt_gc_a"), row("evt_gc_bad", "customer.\x00"), row("evt_gc_b")]
    with ThreadPoolExecutor(max_workers=len(rows) + 1) as pool:
        with held(postgres_url, "evt_gc_first"):
            first = pool.submit(committer.store, rt.db.engine, row("evt_gc_first"))
            wait_for(lambda: writers_waiting_on_a_row(postgres_url) == 1, "the first write")
            stores = [pool.submit(committer.store, rt.db.engine, r) for r in rows]
            wait_for(lambda: committer.waiting() == len(rows), "the rows to queue")
        assert first.result(timeout=30) is True
        assert stores[0].result(timeout=30) is True and stores[2].result(timeout=30) is True
        with pytest.raises(ingest.StoreRefused):
            stores[1].result(timeout=30)
    assert stored_ids(rt) == ["evt_gc_a", "evt_gc_b", "evt_gc_first"]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"id":"evt_\\u0000x","type":"customer.created","created":1,"data":{"object":{}}}', "id"),
        (b'{"id":"evt_1","type":"customer.\\ud800","created":1,"data":{"object":{}}}', "type"),
        (b'{"id":"evt_1","type":"a","created":1,"data":{"object":{"id":"cus_\\u0000"}}}', "object"),
        ('{"id":"evt_1","type":"a","created":1,"data":{"object":{}}}'.encode("utf-16"), "JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "JSON"),
    ],
)
def test_what_the_database_could_not_hold_is_refused_at_the_door(
    served: tuple[Any, Runtime], raw: bytes, reason: str
) -> None:
    """A NUL or a lone surrogate from a JSON escape, a body that is not UTF-8, nesting too deep
    for the parser: 400 with a reason before anything is written, never a 500 or a batch that
    fails for the requests sharing it."""
    app, rt = served
    status, answer = post(app, rt, raw)
    assert status == 400 and answer["error"]["code"] == "invalid_event"
    assert reason in answer["error"]["message"]
    assert stored_ids(rt) == []
