"""The worker's events loop hands the due actions its events scheduled for now to a drain on a
thread beside it: a slow provider call never holds up the events that arrive meanwhile."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

from sqlalchemy import select

from recovery.adapters.deadline import Deadline
from recovery.models import EventStatus, StripeEvent
from recovery.runtime import ActionContext, Claimed, Providers, Runtime, ThreePhase
from recovery.services.work import claims
from recovery.worker import Worker
from tests.conftest import WEBHOOK_SECRET
from tests.support import stripe_payloads as sp

SLOW = "test.slow_call"


def _deliver(runtime: Runtime, client: Any, customer_id: str) -> str:
    now = int(runtime.clock.now().timestamp())
    evt = sp.event("customer.created", sp.customer(customer_id), now)
    body = sp.body_of(evt)
    resp = client.post(
        "/webhooks/stripe",
        data=body,
        headers={"Stripe-Signature": sp.signature_header(body, WEBHOOK_SECRET, now)},
    )
    assert resp.status_code == 200
    return str(evt["id"])


def _status(runtime: Runtime, event_id: str) -> str | None:
    with runtime.db.transaction() as s:
        return s.scalar(select(StripeEvent.status).where(StripeEvent.id == event_id))


def test_a_slow_provider_call_does_not_hold_up_the_events_that_arrive_meanwhile(
    runtime: Runtime, client: Any
) -> None:
    runtime.settings = dataclasses.replace(runtime.settings, worker_tick_seconds=30.0)
    calling, release = threading.Event(), threading.Event()

    def schedule_a_call(ctx: Any, event: Any, obj: Any) -> None:
        if obj["id"] == "cus_slow":  # an action due now, as a reminder or a retry would be
            now = ctx.clock.now()
            claims.schedule(
                ctx.session,
                kind=SLOW,
                subject="customer:cus_slow",
                dedupe_key="slow",
                due_at=now,
                now=now,
            )

    def decide(ctx: ActionContext, action: Claimed) -> str:
        return action.dedupe_key

    def call(providers: Providers, plan: str, deadline: Deadline) -> str:
        calling.set()
        release.wait(10)  # a provider that takes its time
        return plan

    def record(ctx: ActionContext, action: Claimed, plan: str, outcome: str) -> None:
        return None

    runtime.handlers = runtime.handlers.with_reaction(
        "customer.created", schedule_a_call
    ).with_action(SLOW, ThreePhase(decide=decide, call=call, record=record))
    worker = Worker(runtime)
    worker.start(blocking=False)
    try:
        time.sleep(0.2)  # the worker's first look at the inbox, with nothing in it
        _deliver(runtime, client, "cus_slow")
        assert calling.wait(5), "the action its event scheduled was not run"
        started = time.monotonic()
        following = _deliver(runtime, client, "cus_next")
        while _status(runtime, following) != EventStatus.PROCESSED:
            assert time.monotonic() - started < 1.0, "held up behind the slow call"
            time.sleep(0.02)
        assert not release.is_set()  # processed while the call was still running
    finally:
        release.set()
        worker.stop()
