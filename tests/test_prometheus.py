"""GET /metrics: Prometheus's text format, parsed with prometheus_client's own parser; the
figures come from the database, so they move with the traffic whichever process answers."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from recovery.adapters.clock import FrozenClock
from recovery.adapters.stripe_fake import FakeStripeGateway
from recovery.app import create_app
from recovery.services.events.inbox import ingest, parse_event
from recovery.services.registry import build_runtime
from recovery.worker import Worker
from tests.conftest import make_settings
from tests.support.scenario import Story

TOKEN = "metrics-token-0123456789"


def scrape(client: Any, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: dict[Any, float], name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def test_metrics_parse_and_move_with_the_traffic(
    runtime: Any, fake_gateway: FakeStripeGateway, clock: FrozenClock
) -> None:
    client = create_app(runtime=runtime).test_client()
    quiet = scrape(client)
    assert value(quiet, "recovery_shadow_mode") == 0
    assert total(quiet, "recovery_stripe_events_waiting") == 0
    assert value(quiet, "recovery_event_processing_lag_seconds") == 0

    story = Story(runtime, fake_gateway, clock)
    billing = story.customer(amount=1900)
    # Stored but not yet processed: the lag grows with the clock.
    bodies = [json.dumps(e).encode() for e in fake_gateway.events]
    for body in bodies:  # as the webhook does: stored, for a worker to process
        ingest(runtime.db, parse_event(body)[0], body, clock.now())
    story._delivered = len(fake_gateway.events)
    clock.advance(timedelta(seconds=90))
    waiting = scrape(client)
    assert total(waiting, "recovery_stripe_events_waiting", state="pending") == len(bodies)
    assert total(waiting, "recovery_stripe_events_last_day", state="pending") == len(bodies)
    assert value(waiting, "recovery_event_processing_lag_seconds") == 90
    Worker(runtime, worker_id="w1").process_events()
    Worker(runtime, worker_id="w1").heartbeat()

    story.stripe_charges(billing.invoice, decline_code="insufficient_funds")
    failed = scrape(client)
    assert value(failed, "recovery_event_processing_lag_seconds") == 0
    assert total(failed, "recovery_stripe_events_last_day", type="invoice.payment_failed") == 1
    assert total(failed, "recovery_stripe_events_last_day", state="processed") > len(bodies)
    assert total(failed, "recovery_stripe_events_waiting") == 0
    assert total(failed, "recovery_due_actions", kind="case.retry", state="pending") == 1
    assert total(failed, "recovery_messages", channel="email", state="pending") >= 1
    assert value(failed, "recovery_worker_heartbeat_age_seconds", worker="w1") == 0

    # Nothing ran for an hour: the pending actions that came due are overdue.
    clock.advance(timedelta(hours=1))
    late = scrape(client)
    assert total(late, "recovery_due_actions_overdue") >= 1
    assert value(late, "recovery_worker_heartbeat_age_seconds", worker="w1") == 3600

    story.stripe_charges(billing.invoice)  # paid: the case is recovered
    paid = scrape(client)
    assert total(paid, "recovery_recoveries_total", currency="USD") == 1
    assert value(paid, "recovery_recovered_amount_total", currency="USD") == 19.0


def test_a_parked_event_is_counted_as_parked(runtime: Any, clock: FrozenClock) -> None:
    from sqlalchemy import update

    from recovery.models import StripeEvent

    event = {
        "id": "evt_parked",
        "object": "event",
        "type": "invoice.payment_failed",
        "created": 1,
        "data": {"object": {"id": "in_x", "object": "invoice"}},
        "livemode": False,
        "api_version": "2026-10-28.endive",
    }
    body = json.dumps(event).encode()
    ingest(runtime.db, parse_event(body)[0], body, clock.now())
    with runtime.db.transaction() as s:
        s.execute(update(StripeEvent).values(status="failed"))
    samples = scrape(create_app(runtime=runtime).test_client())
    parked = {"type": "invoice.payment_failed", "state": "parked"}
    assert value(samples, "recovery_stripe_events_waiting", **parked) == 1
    assert value(samples, "recovery_stripe_events_last_day", **parked) == 1


def test_the_bearer_token_when_set(sqlite_url: str, tmp_path: Path, clock: FrozenClock) -> None:
    rt = build_runtime(
        make_settings(sqlite_url, tmp_path, metrics_token=TOKEN, mode="shadow"), clock=clock
    )
    client = create_app(runtime=rt).test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    samples = scrape(client, Authorization=f"Bearer {TOKEN}")
    assert value(samples, "recovery_shadow_mode") == 1
    rt.db.dispose()
