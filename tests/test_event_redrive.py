"""Events whose processing fails are re-driven with backoff, parked, listed and replayable."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from recovery.adapters.clock import FrozenClock
from recovery.cli import main
from recovery.models import EventStatus, Invoice, StripeEvent
from recovery.runtime import Runtime
from recovery.services.events import inbox
from recovery.worker import Worker
from tests.support import stripe_payloads as sp


@pytest.fixture
def flaky_invoice_reaction(runtime: Runtime) -> Iterator[dict[str, int]]:
    """A reaction that fails until told to heal - a bug fixed by a deploy, an outage ended."""
    state = {"failures_left": 10_000, "calls": 0}

    def reaction(ctx: Any, event: Any, obj: Any) -> None:
        state["calls"] += 1
        if state["failures_left"] > 0:
            state["failures_left"] -= 1
            raise RuntimeError("downstream unavailable")

    runtime.handlers = runtime.handlers.with_reaction("invoice.payment_failed", reaction)
    yield state


def store_failed_invoice_event(rt: Runtime) -> str:
    now = int(rt.clock.now().timestamp())
    evt = sp.event("invoice.payment_failed", sp.invoice("in_R", "cus_R", "sub_R"), now)
    inbox.receive_events(rt.db, [sp.body_of(evt)], rt.processing_context, rt.clock)
    return str(evt["id"])


def event_row(rt: Runtime, event_id: str) -> StripeEvent:
    with rt.db.transaction() as s:
        row = s.get(StripeEvent, event_id)
        assert row is not None
        return row


def test_failing_event_is_retried_with_backoff_then_parked(
    runtime: Runtime, clock: FrozenClock, flaky_invoice_reaction: dict[str, int]
) -> None:
    event_id = store_failed_invoice_event(runtime)
    worker = Worker(runtime)
    assert worker.redrive_events() == 0  # not due before its backoff
    for _ in range(inbox.MAX_PROCESSING_ATTEMPTS):
        row = event_row(runtime, event_id)
        if row.status != EventStatus.PENDING:
            break
        clock.set(row.next_attempt_at)
        worker.redrive_events()
    row = event_row(runtime, event_id)
    assert row.status == EventStatus.FAILED
    assert row.attempts == inbox.MAX_PROCESSING_ATTEMPTS
    assert row.last_error == "RuntimeError: downstream unavailable"
    # the mirror write rolled back with the failed reaction: nothing half-applied
    with runtime.db.transaction() as s:
        assert s.get(Invoice, "in_R") is None


def test_replay_failed_from_the_command_line(
    runtime: Runtime,
    clock: FrozenClock,
    flaky_invoice_reaction: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    event_id = store_failed_invoice_event(runtime)
    with runtime.db.transaction() as s:
        s.get(StripeEvent, event_id).status = EventStatus.FAILED  # type: ignore[union-attr]
    monkeypatch.setattr("recovery.cli.common.runtime_from_env", lambda: runtime)
    runner = CliRunner()
    listed = runner.invoke(main, ["events", "list", "--status", "failed"])
    assert event_id in listed.output and "1 failed event(s)" in listed.output

    flaky_invoice_reaction["failures_left"] = 0  # the bug is fixed
    result = runner.invoke(main, ["events", "replay", "--failed"])
    assert result.exit_code == 0, result.output
    assert '"replayed": 1' in result.output and '"processed": 1' in result.output
    assert event_row(runtime, event_id).status == EventStatus.PROCESSED
    with runtime.db.transaction() as s:
        assert s.get(Invoice, "in_R") is not None


def test_events_api_lists_by_status(client: Any, runtime: Runtime) -> None:
    from tests.conftest import API_KEY

    now = int(runtime.clock.now().timestamp())
    bodies = [
        sp.body_of(sp.event("customer.created", sp.customer(f"cus_{i}"), now + i)) for i in range(3)
    ]
    inbox.receive_events(runtime.db, bodies, runtime.processing_context, runtime.clock)
    auth = {"Authorization": f"Bearer {API_KEY}"}
    page = client.get("/api/v1/events?status=processed&limit=2", headers=auth).json
    assert len(page["data"]) == 2 and page["has_more"] is True
    rest = client.get(
        f"/api/v1/events?status=processed&starting_after={page['data'][-1]['id']}", headers=auth
    ).json
    assert len(rest["data"]) == 1 and rest["has_more"] is False
    assert client.get("/api/v1/events?status=bogus", headers=auth).status_code == 400
    assert client.get("/api/v1/events", headers={"Authorization": "Bearer nope"}).status_code == 401
    with runtime.db.transaction() as s:
        assert len(s.scalars(select(StripeEvent)).all()) == 3
