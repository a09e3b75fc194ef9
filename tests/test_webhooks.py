"""POST /webhooks/stripe: only genuine, fresh, well-formed events are stored, each once, and
acknowledged as soon as stored; a worker processes them."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from sqlalchemy import func, select

from recovery.models import Customer, EventStatus, StripeEvent
from recovery.runtime import Runtime
from recovery.worker import Worker
from tests.conftest import WEBHOOK_SECRET
from tests.support import stripe_payloads as sp


def post(client: Any, body: bytes, header: str | None) -> Any:
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Stripe-Signature"] = header
    return client.post("/webhooks/stripe", data=body, headers=headers)


def count_events(rt: Runtime) -> int:
    with rt.db.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(StripeEvent)) or 0)


@pytest.fixture
def customer_event(runtime: Runtime) -> tuple[bytes, int]:
    now = int(runtime.clock.now().timestamp())
    evt = sp.event("customer.created", sp.customer("cus_A", email="a@example.com"), now - 5)
    return sp.body_of(evt), now


def test_valid_event_is_stored_acknowledged_then_processed_by_the_worker(
    client: Any, runtime: Runtime, customer_event: tuple[bytes, int]
) -> None:
    body, now = customer_event
    resp = post(client, body, sp.signature_header(body, WEBHOOK_SECRET, now))
    assert resp.status_code == 200
    assert resp.json == {"received": True, "duplicate": False, "status": "pending"}
    with runtime.db.transaction() as session:
        stored = session.scalars(select(StripeEvent)).one()
        assert stored.payload == body.decode()  # byte for byte as signed
        assert stored.status == EventStatus.PENDING
        assert session.get(Customer, "cus_A") is None  # the request only stored it
    assert Worker(runtime).process_events() == 1
    with runtime.db.transaction() as session:
        assert session.scalars(select(StripeEvent)).one().status == EventStatus.PROCESSED
        assert session.get(Customer, "cus_A").email == "a@example.com"  # type: ignore[union-attr]


def test_inline_mode_processes_in_the_request(
    client: Any, runtime: Runtime, customer_event: tuple[bytes, int]
) -> None:
    runtime.settings = dataclasses.replace(runtime.settings, process_inline=True)
    body, now = customer_event
    resp = post(client, body, sp.signature_header(body, WEBHOOK_SECRET, now))
    assert resp.json == {"received": True, "duplicate": False, "status": "processed"}
    with runtime.db.transaction() as session:
        assert session.get(Customer, "cus_A").email == "a@example.com"  # type: ignore[union-attr]


def test_duplicate_delivery_is_acknowledged_and_changes_nothing(
    client: Any, runtime: Runtime, customer_event: tuple[bytes, int]
) -> None:
    body, now = customer_event
    assert post(client, body, sp.signature_header(body, WEBHOOK_SECRET, now)).status_code == 200
    # Stripe re-signs every retry with a fresh timestamp
    again = post(client, body, sp.signature_header(body, WEBHOOK_SECRET, now + 1))
    assert again.status_code == 200
    assert again.json["duplicate"] is True
    assert count_events(runtime) == 1


def test_rotated_secret_two_v1_signatures_are_accepted(
    client: Any, runtime: Runtime, customer_event: tuple[bytes, int]
) -> None:
    body, now = customer_event
    old = sp.signature_header(body, "whsec_old_one", now).split(",")[1]
    new = sp.signature_header(body, WEBHOOK_SECRET, now).split(",")[1]
    resp = post(client, body, f"t={now},{old},{new},v0=ignored")
    assert resp.status_code == 200


def test_signature_from_stripe_sdk_verifies(
    client: Any, runtime: Runtime, customer_event: tuple[bytes, int]
) -> None:
    import stripe

    body, now = customer_event
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), WEBHOOK_SECRET, now)
    assert post(client, body, header).status_code == 200


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("missing", "missing Stripe-Signature"),
        ("wrong_secret", "no v1 signature matches"),
        ("stale", "older than the 300 s tolerance"),
        ("tampered", "no v1 signature matches"),
        ("no_v1", "no v1 signature"),
        ("garbage_header", "no timestamp"),
    ],
)
def test_bad_signatures_are_rejected_with_a_reason_and_nothing_written(
    client: Any, runtime: Runtime, customer_event: tuple[bytes, int], case: str, reason: str
) -> None:
    body, now = customer_event
    header: str | None = sp.signature_header(body, WEBHOOK_SECRET, now)
    if case == "missing":
        header = None
    elif case == "wrong_secret":
        header = sp.signature_header(body, "whsec_someone_else", now)
    elif case == "stale":
        header = sp.signature_header(body, WEBHOOK_SECRET, now - 301)
    elif case == "tampered":
        body = body.replace(b"a@example.com", b"evil@example.com")
    elif case == "no_v1":
        header = f"t={now},v0=abc"
    elif case == "garbage_header":
        header = "nonsense"
    resp = post(client, body, header)
    assert resp.status_code == 400
    assert resp.json["error"]["code"] == "invalid_signature"
    assert reason in resp.json["error"]["message"]
    assert count_events(runtime) == 0


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe\x00binary", "not valid JSON"),
        (b"[1, 2, 3]", "not a JSON object"),
        (b'{"id": "evt_1", "type": "customer.created", "created": 1}', "no data.object"),
        (b'{"type": "x", "created": 1, "data": {"object": {}}}', "no valid id"),
    ],
)
def test_signed_but_malformed_bodies_are_rejected(
    client: Any, runtime: Runtime, body: bytes, reason: str
) -> None:
    now = int(runtime.clock.now().timestamp())
    resp = post(client, body, sp.signature_header(body, WEBHOOK_SECRET, now))
    assert resp.status_code == 400
    assert resp.json["error"]["code"] == "invalid_event"
    assert reason in resp.json["error"]["message"]
    assert count_events(runtime) == 0


def test_huge_body_is_413_and_nothing_written(client: Any, runtime: Runtime) -> None:
    now = int(runtime.clock.now().timestamp())
    evt = sp.event("customer.created", sp.customer("cus_big", description="x" * 1_100_000), now)
    body = sp.body_of(evt)
    resp = post(client, body, sp.signature_header(body, WEBHOOK_SECRET, now))
    assert resp.status_code == 413
    assert resp.json["error"]["code"] == "request_entity_too_large"
    assert count_events(runtime) == 0


def test_processing_error_still_acknowledges_and_leaves_event_for_the_worker(
    client: Any, runtime: Runtime
) -> None:
    now = int(runtime.clock.now().timestamp())
    broken = sp.customer("cus_B")
    broken["preferred_locales"] = "not-a-list"  # tolerated by the mapper
    # An invoice without a currency cannot be mirrored: the mapper raises.
    bad_invoice = sp.invoice("in_bad", "cus_B", None)
    del bad_invoice["currency"]
    body = sp.body_of(sp.event("invoice.payment_failed", bad_invoice, now))
    resp = post(client, body, sp.signature_header(body, WEBHOOK_SECRET, now))
    assert resp.status_code == 200  # stored, so acknowledged: Stripe must not resend forever
    assert resp.json["status"] == "pending"
    assert Worker(runtime).process_events() == 1
    with runtime.db.transaction() as session:
        stored = session.scalars(select(StripeEvent)).one()
        assert stored.status == EventStatus.PENDING
        assert stored.attempts == 1
        assert "currency" in (stored.last_error or "")
        assert stored.next_attempt_at > runtime.clock.now()


def test_database_down_answers_503_so_stripe_retries(
    client: Any, runtime: Runtime, customer_event: tuple[bytes, int]
) -> None:
    from sqlalchemy import create_engine

    body, now = customer_event
    # Point the runtime at a database that cannot be reached.
    runtime.db.engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    runtime.db.sessionmaker.configure(bind=runtime.db.engine)
    resp = post(client, body, sp.signature_header(body, WEBHOOK_SECRET, now))
    assert resp.status_code == 503
    assert resp.json["error"]["code"] == "database_unavailable"


def test_unknown_event_types_are_stored_and_marked_processed(client: Any, runtime: Runtime) -> None:
    now = int(runtime.clock.now().timestamp())
    body = sp.body_of(sp.event("plan.created", sp.fixture("plan"), now))
    resp = post(client, body, sp.signature_header(body, WEBHOOK_SECRET, now))
    assert resp.status_code == 200
    assert json.loads(resp.data)["status"] == "pending"
    assert Worker(runtime).process_events() == 1
    assert count_events(runtime) == 1
    with runtime.db.transaction() as session:
        assert session.scalars(select(StripeEvent)).one().status == EventStatus.PROCESSED


def test_only_post_is_allowed_and_the_answer_sets_no_cookie(
    client: Any, runtime: Runtime, customer_event: tuple[bytes, int]
) -> None:
    # The default mode answers in front of Flask: the answer must still be a plain JSON reply
    # with no session cookie, and other methods still get Flask's 405 with a reason.
    body, now = customer_event
    resp = post(client, body, sp.signature_header(body, WEBHOOK_SECRET, now))
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    assert "Set-Cookie" not in resp.headers
    assert int(resp.headers["Content-Length"]) == len(resp.get_data())
    got = client.get("/webhooks/stripe")
    assert got.status_code == 405
    assert got.json["error"]["code"] == "method_not_allowed"
    assert count_events(runtime) == 1
