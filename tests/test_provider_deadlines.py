"""A provider that hangs costs an action its deadline, never a locked row or a lost message.

An SMTP server that accepts and never answers, a Stripe stand-in that reads the request and
never responds: the worker's call times out inside its deadline
(RECOVERY_PROVIDER_DEADLINE_SECONDS), no transaction is open meanwhile - a second connection
updates the case and the message while the call hangs - and the action is retried later,
exactly once, when the provider is back.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from recovery.adapters.clock import FrozenClock
from recovery.adapters.email import SmtpMailer, parse_smtp_url
from recovery.adapters.stripe.sdk import StripeSdkGateway
from recovery.adapters.stripe_fake import FakeStripeGateway
from recovery.models import ActionStatus, DueAction
from recovery.runtime import Runtime
from recovery.services.cases import log as case_log
from recovery.services.cases import scheduling as case_scheduling
from tests.support.messaging import messages, messaging_runtime
from tests.support.scenario import Story
from tests.support.smtp_sink import smtp_sink

DEADLINE = 1.0


class Hanging:
    """Accepts TCP connections, reads whatever comes, never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = threading.Event()
        self.received = threading.Event()
        self._conns: list[socket.socket] = []
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self._conns.append(conn)
            self.accepted.set()
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        conn.settimeout(0.1)
        while not self._stop:
            try:
                if conn.recv(65536):
                    self.received.set()
            except TimeoutError:
                continue
            except OSError:
                return

    def close(self) -> None:
        self._stop = True
        for conn in self._conns:
            conn.close()
        self.sock.close()


@pytest.fixture
def hanging() -> Iterator[Hanging]:
    server = Hanging()
    yield server
    server.close()


def _runtime(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake: FakeStripeGateway, smtp_url: str
) -> Runtime:
    return messaging_runtime(
        database_url,
        tmp_path,
        clock,
        fake,
        smtp_url=smtp_url,
        provider_deadline_seconds=DEADLINE,
        worker_threads=8,
    )


def _write_from_elsewhere(database_url: str, statement: str, params: dict[str, Any]) -> None:
    """An UPDATE on a connection of its own that gives up on a lock after half a second: it
    succeeds only if no transaction holds the row (or, on SQLite, the database)."""
    if database_url.startswith("sqlite"):
        engine = create_engine(database_url, connect_args={"timeout": 0.5}, poolclass=NullPool)
    else:
        engine = create_engine(database_url, poolclass=NullPool)
    with engine.begin() as conn:
        if not database_url.startswith("sqlite"):
            conn.execute(text("SET LOCAL lock_timeout = '500ms'"))
        assert conn.execute(text(statement), params).rowcount == 1
    engine.dispose()


def _in_background(fn: Any) -> tuple[threading.Thread, list[float]]:
    took: list[float] = []

    def run() -> None:
        started = time.monotonic()
        fn()
        took.append(time.monotonic() - started)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, took


def test_smtp_that_never_answers_times_out_and_the_message_goes_later_once(
    database_url: str,
    tmp_path: Path,
    clock: FrozenClock,
    fake_gateway: FakeStripeGateway,
    hanging: Hanging,
) -> None:
    rt = _runtime(database_url, tmp_path, clock, fake_gateway, f"smtp://127.0.0.1:{hanging.port}")
    story = Story(rt, fake_gateway, clock)
    b = story.customer()
    story.deliver()
    story.stripe_charges(b.invoice, decline_code="generic_decline")
    case_id = story.case(b.invoice).id
    day0 = next(m for m in messages(rt, case_id=case_id) if m.step == "soft.0")

    worker, took = _in_background(story.worker.run_until_idle)
    assert hanging.accepted.wait(10), "the worker never connected to the SMTP server"
    # The call is waiting for the server's greeting: nothing of the case or the message is
    # locked, another connection changes both.
    _write_from_elsewhere(
        database_url,
        "UPDATE recovery_cases SET amount_due = amount_due WHERE id = :id",
        {"id": case_id},
    )
    _write_from_elsewhere(
        database_url,
        "UPDATE outbox_messages SET locale = locale WHERE id = :id",
        {"id": day0.id},
    )
    # Its attempt was counted before the call (an SMS's next attempt asks Twilio first for it).
    calling = next(m for m in messages(rt, case_id=case_id) if m.step == "soft.0")
    assert (calling.status, calling.attempts) == ("pending", 1)
    assert worker.is_alive()
    worker.join(30)
    assert not worker.is_alive() and took[0] < DEADLINE + 5
    row = next(m for m in messages(rt, case_id=case_id) if m.step == "soft.0")
    assert row.status == "pending" and row.attempts == 1
    with rt.db.transaction() as s:
        send = s.query(DueAction).filter_by(dedupe_key=f"outbox:{row.dedupe_key}").one()
        assert send.status == ActionStatus.PENDING and send.lease_owner is None
        assert "SMTP unavailable" in (send.last_error or "")
        assert "timed out" in (send.last_error or "")
        retry_at = send.due_at

    with smtp_sink() as sink:  # the server is back
        rt.mailer = SmtpMailer(parse_smtp_url(sink.url))
        clock.set(retry_at)
        story.worker.run_until_idle()
        story.worker.run_until_idle()
        rt.db.dispose()
        row = next(m for m in messages(rt, case_id=case_id) if m.step == "soft.0")
        assert (row.status, row.attempts) == ("sent", 2)
        assert [m["Message-ID"] for m in sink.messages] == [row.provider_id]
    story.worker.actions.close()


class _StallingStripe(Hanging):
    """A Stripe API address that takes the request and never answers."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def test_stripe_that_stalls_times_out_and_the_retry_charges_later_once(
    database_url: str, tmp_path: Path, clock: FrozenClock, fake_gateway: FakeStripeGateway
) -> None:
    rt = _runtime(database_url, tmp_path, clock, fake_gateway, "")
    story = Story(rt, fake_gateway, clock)
    b = story.customer()
    story.deliver()
    story.stripe_charges(b.invoice, decline_code="insufficient_funds")
    story.run_due()  # Stripe's own retries off, the day-0 reminder (the local outbox)
    case = story.case(b.invoice)
    retry = next(a for a in story.pending(case.id) if a.kind == case_log.RETRY_KIND)
    key = case_scheduling.stripe_key(retry.dedupe_key, retry.payload)
    clock.set(retry.due_at)

    stall = _StallingStripe()
    try:
        rt.gateway = StripeSdkGateway("sk_test_stall", api_base=stall.url, max_retries=3)
        worker, took = _in_background(story.worker.run_until_idle)
        assert stall.received.wait(10), "the worker never called Stripe"
        _write_from_elsewhere(
            database_url,
            "UPDATE recovery_cases SET amount_due = amount_due WHERE id = :id",
            {"id": case.id},
        )
        assert worker.is_alive()
        worker.join(30)
        assert not worker.is_alive() and took[0] < DEADLINE + 5
    finally:
        stall.close()
    with rt.db.transaction() as s:
        action = s.get(DueAction, retry.id)
        assert action is not None
        assert (action.status, action.attempts) == (ActionStatus.PENDING, 1)
        assert "Unavailable" in (action.last_error or "")
        retry_at = action.due_at
    assert story.case(b.invoice).our_attempts == 0
    assert not [r for r in fake_gateway.requests if r.idempotency_key == key]

    rt.gateway = fake_gateway  # Stripe answers again
    clock.set(retry_at + timedelta(seconds=1))
    story.run_due()
    case = story.case(b.invoice)
    assert case.our_attempts == 1
    assert [r.method for r in fake_gateway.requests if r.idempotency_key == key] == ["pay_invoice"]
    with rt.db.transaction() as s:
        action = s.get(DueAction, retry.id)
        assert action is not None and (action.status, action.attempts) == ("done", 2)
    story.worker.actions.close()
    rt.db.dispose()
