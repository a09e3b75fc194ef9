"""The mirror: both API shapes map correctly; the newest state wins whatever the order."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from recovery.domain import stripe_objects as so
from recovery.domain.stripe_objects.fields import MAX_TIMESTAMP
from recovery.models import (
    Customer,
    Invoice,
    InvoicePayment,
    PaymentAttempt,
    PaymentMethod,
    RecoveryCase,
    StripeEvent,
    Subscription,
)
from recovery.runtime import Runtime
from recovery.services.events import mirror
from recovery.services.events.inbox import receive_events
from tests.conftest import API_KEY, WEBHOOK_SECRET
from tests.support import stripe_payloads as sp

T0 = 1_763_000_000


def deliver(rt: Runtime, *events: dict[str, Any]) -> None:
    receive_events(rt.db, [sp.body_of(e) for e in events], rt.processing_context, rt.clock)


def test_current_version_invoice_subscription_and_card(runtime: Runtime) -> None:
    sub = sp.subscription(
        "sub_1", "cus_1", period_start=T0, period_end=T0 + 2_592_000, default_payment_method="pm_1"
    )
    inv = sp.invoice("in_1", "cus_1", "sub_1", attempt_count=1, next_payment_attempt=T0 + 86400)
    inv["payments"] = {"data": [{"payment": {"type": "payment_intent", "payment_intent": "pi_1"}}]}
    deliver(
        runtime,
        sp.event("customer.subscription.created", sub, T0),
        sp.event(
            "payment_method.attached",
            sp.card_payment_method(
                "pm_1", "cus_1", brand="mastercard", funding="debit", exp_month=1, exp_year=2027
            ),
            T0,
        ),
        sp.event("invoice.payment_failed", inv, T0 + 10),
    )
    with runtime.db.transaction() as s:
        sub_row = s.get(Subscription, "sub_1")
        assert sub_row is not None
        # the period comes from the item on current API versions
        assert sub_row.current_period_end == datetime.fromtimestamp(T0 + 2_592_000, UTC)
        assert sub_row.default_payment_method_id == "pm_1"
        assert [(i.price_id, i.unit_amount, i.interval) for i in sub_row.items] == [
            ("price_monthly", 2000, "month")
        ]
        inv_row = s.get(Invoice, "in_1")
        assert inv_row is not None
        assert inv_row.subscription_id == "sub_1"  # from parent.subscription_details
        assert (inv_row.status, inv_row.attempt_count) == ("open", 1)
        assert inv_row.next_payment_attempt == datetime.fromtimestamp(T0 + 86400, UTC)
        assert inv_row.hosted_invoice_url == "https://invoice.stripe.com/i/in_1"
        assert s.scalars(select(InvoicePayment.payment_intent_id)).all() == ["pi_1"]
        card = s.get(PaymentMethod, "pm_1")
        assert card is not None
        assert (card.brand, card.funding, card.exp_month, card.exp_year, card.customer_id) == (
            "mastercard",
            "debit",
            1,
            2027,
            "cus_1",
        )


def test_legacy_2017_shapes_map_like_current_ones(runtime: Runtime) -> None:
    legacy_sub = sp.legacy_subscription("sub_L", "cus_L")
    legacy_inv = sp.legacy_invoice("in_L", "cus_L", "sub_L", payment_intent="pi_L")
    legacy_card = {
        "id": "card_L",
        "object": "card",
        "brand": "MasterCard",
        "last4": "4444",
        "exp_month": 3,
        "exp_year": 2027,
        "funding": "credit",
        "customer": "cus_L",
        "country": "de",
    }
    deliver(
        runtime,
        sp.event("customer.subscription.created", legacy_sub, T0, api_version="2017-08-15"),
        sp.event("invoice.payment_failed", legacy_inv, T0 + 1, api_version="2017-08-15"),
        sp.event("customer.source.expiring", legacy_card, T0 + 2, api_version="2017-08-15"),
    )
    with runtime.db.transaction() as s:
        sub_row = s.get(Subscription, "sub_L")
        assert sub_row is not None
        assert sub_row.current_period_end == datetime.fromtimestamp(1_702_592_000, UTC)
        assert [(i.price_id, i.unit_amount) for i in sub_row.items] == [("plan_basic", 2000)]
        inv_row = s.get(Invoice, "in_L")
        assert inv_row is not None and inv_row.subscription_id == "sub_L"
        assert s.scalars(select(InvoicePayment.invoice_id)).all() == ["in_L"]
        card = s.get(PaymentMethod, "card_L")
        assert card is not None
        assert (card.brand, card.country) == ("mastercard", "DE")


def test_older_event_never_overwrites_newer_state(runtime: Runtime) -> None:
    open_inv = sp.invoice("in_2", "cus_2", "sub_2", attempt_count=1)
    paid_inv = sp.invoice(
        "in_2", "cus_2", "sub_2", status="paid", amount_paid=2000, attempt_count=2
    )
    deliver(
        runtime,
        sp.event("invoice.paid", paid_inv, T0 + 100),
        sp.event("invoice.payment_failed", open_inv, T0),  # arrives late
    )
    with runtime.db.transaction() as s:
        row = s.get(Invoice, "in_2")
        assert row is not None
        assert (row.status, row.amount_remaining, row.attempt_count) == ("paid", 0, 2)


def test_same_second_different_states_converge_to_the_furthest_along(runtime: Runtime) -> None:
    failed = sp.invoice("in_3", "cus_3", "sub_3", attempt_count=1)
    paid = sp.invoice("in_3", "cus_3", "sub_3", status="paid", amount_paid=2000, attempt_count=1)
    for order in itertools.permutations([failed, paid]):
        types = {id(failed): "invoice.payment_failed", id(paid): "invoice.paid"}
        deliver(runtime, *(sp.event(types[id(o)], o, T0) for o in order))
        with runtime.db.transaction() as s:
            row = s.get(Invoice, "in_3")
            assert row is not None and row.status == "paid"


@pytest.mark.parametrize("charge_first", [True, False])
def test_charge_and_payment_intent_merge_into_one_attempt(
    runtime: Runtime, charge_first: bool
) -> None:
    charge = sp.failed_charge(
        "ch_9",
        "cus_9",
        "pi_9",
        decline_code="do_not_honor",
        brand="mastercard",
        network_advice_code="24",
        network_decline_code=None,
        advice_code=None,
    )
    pi = sp.fixture(
        "payment_intent",
        id="pi_9",
        customer="cus_9",
        status="requires_payment_method",
        amount=2000,
        latest_charge="ch_9",
    )
    pi["last_payment_error"] = {
        "type": "card_error",
        "code": "card_declined",
        "decline_code": "do_not_honor",
        "charge": "ch_9",
        "network_advice_code": "24",
        "advice_code": "try_again_later",
        "message": "Your card was declined.",
        "payment_method": sp.card_payment_method("pm_9", "cus_9", brand="mastercard"),
    }
    events = [
        sp.event("charge.failed", charge, T0),
        sp.event("payment_intent.payment_failed", pi, T0),
    ]
    deliver(runtime, *(events if charge_first else reversed(events)))
    with runtime.db.transaction() as s:
        attempts = s.scalars(select(PaymentAttempt)).all()
        assert len(attempts) == 1
        a = attempts[0]
        assert (a.id, a.status, a.payment_intent_id) == ("ch_9", "failed", "pi_9")
        assert (a.failure_code, a.decline_code, a.card_brand) == (
            "card_declined",
            "do_not_honor",
            "mastercard",
        )
        assert (a.network_advice_code, a.outcome_type, a.network_status) == (
            "24",
            "issuer_declined",
            "declined_by_network",
        )
        # from the charge event only / the PaymentIntent event only:
        assert a.advice_code == "try_again_later"


def test_customer_view_in_api(client: Any, runtime: Runtime) -> None:
    cus = sp.customer(
        "cus_V",
        email="v@example.com",
        name="Vera",
        phone="+4915112345678",
        preferred_locales=["de-DE"],
    )
    cus["address"]["country"] = "DE"
    cus["invoice_settings"]["default_payment_method"] = "pm_V"
    deliver(
        runtime,
        sp.event("customer.created", cus, T0),
        sp.event("payment_method.attached", sp.card_payment_method("pm_V", "cus_V"), T0),
        sp.event("customer.subscription.created", sp.subscription("sub_V", "cus_V"), T0),
        sp.event(
            "invoice.payment_failed", sp.invoice("in_V", "cus_V", "sub_V", attempt_count=1), T0
        ),
    )
    resp = client.get("/api/v1/customers/cus_V", headers={"Authorization": f"Bearer {API_KEY}"})
    assert resp.status_code == 200
    body = resp.json
    assert (body["email"], body["address_country"], body["preferred_locales"]) == (
        "v@example.com",
        "DE",
        ["de-DE"],
    )
    assert body["cards"][0]["is_default"] is True
    assert body["subscriptions"][0]["items"][0]["unit_amount"] == 2000
    assert body["invoices"][0]["attempt_count"] == 1
    assert client.get("/api/v1/customers/cus_V").status_code == 401
    missing = client.get("/api/v1/customers/cus_X", headers={"Authorization": f"Bearer {API_KEY}"})
    assert missing.status_code == 404 and missing.json["error"]["code"] == "not_found"


def test_deleted_customer_and_detached_card(runtime: Runtime) -> None:
    deliver(
        runtime,
        sp.event("payment_method.attached", sp.card_payment_method("pm_D", "cus_D"), T0),
        sp.event("payment_method.detached", sp.card_payment_method("pm_D", None), T0 + 5),
        sp.event("customer.deleted", sp.customer("cus_D"), T0 + 6),
        sp.event("customer.updated", sp.customer("cus_D", email="late@example.com"), T0 + 1),
    )
    with runtime.db.transaction() as s:
        pm = s.get(PaymentMethod, "pm_D")
        assert pm is not None and pm.customer_id is None
        customer = s.get(Customer, "cus_D")
        assert customer is not None and customer.deleted is True


def test_same_second_conflict_is_settled_by_asking_stripe(
    runtime: Runtime, fake_gateway: Any
) -> None:
    from recovery.models import DueAction
    from recovery.worker import Worker

    cus = fake_gateway.add_customer(email="truth@example.com")
    first = sp.customer(cus["id"], email="first@example.com")
    second = sp.customer(cus["id"], email="second@example.com")
    deliver(
        runtime,
        sp.event("customer.updated", first, T0),
        sp.event("customer.updated", second, T0),  # same second, another state
    )
    with runtime.db.transaction() as s:
        [action] = s.scalars(select(DueAction).where(DueAction.kind == "stripe.refetch")).all()
        assert action.payload == {"object": "customer", "id": cus["id"]}
    Worker(runtime).run_until_idle()
    with runtime.db.transaction() as s:
        row = s.get(Customer, cus["id"])
        assert row is not None and row.email == "truth@example.com"
    # an older event cannot undo what Stripe said
    deliver(runtime, sp.event("customer.updated", first, T0 + 1))
    with runtime.db.transaction() as s:
        assert s.get(Customer, cus["id"]).email == "truth@example.com"  # type: ignore[union-attr]


def test_large_amounts_and_far_timestamps_are_stored_exactly(runtime: Runtime) -> None:
    """A VND invoice passes 2**31 minor units at about USD 85,000; a subscription may end
    after 2038. Both must be stored as they are, on both engines."""
    big = 5_000_000_000  # VND is zero-decimal: 5 billion dong
    after_2038 = 2_300_000_000  # 2042-11-18
    sub = sp.subscription("sub_big", "cus_big", period_start=T0, period_end=T0 + 2_592_000)
    sub["cancel_at"] = after_2038
    inv = sp.invoice("in_big", "cus_big", "sub_big", amount_due=big, currency="vnd")
    deliver(
        runtime,
        sp.event("customer.subscription.created", sub, after_2038 - 10),
        sp.event("invoice.payment_failed", inv, after_2038),
    )
    with runtime.db.transaction() as s:
        invoice = s.get(Invoice, "in_big")
        subscription = s.get(Subscription, "sub_big")
        assert invoice is not None and subscription is not None
        assert (invoice.amount_due, invoice.version_ts) == (big, after_2038)
        assert subscription.cancel_at == datetime.fromtimestamp(after_2038, UTC)
        assert s.scalar(select(func.max(StripeEvent.created))) == after_2038
        case = s.scalars(select(RecoveryCase).where(RecoveryCase.invoice_id == "in_big")).one()
        assert (case.amount_due, case.currency) == (big, "vnd")


def test_a_timestamp_past_what_a_date_can_hold_is_refused_and_nothing_written(
    runtime: Runtime, client: Any
) -> None:
    body = sp.body_of(sp.event("customer.created", sp.customer("cus_far"), MAX_TIMESTAMP + 1))
    now = int(runtime.clock.now().timestamp())
    header = sp.signature_header(body, WEBHOOK_SECRET, now)
    response = client.post(
        "/webhooks/stripe",
        data=body,
        headers={"Content-Type": "application/json", "Stripe-Signature": header},
    )
    assert response.status_code == 400
    assert "created" in response.json["error"]["message"]
    with runtime.db.transaction() as s:
        assert s.scalar(select(func.count()).select_from(StripeEvent)) == 0


def test_a_states_digest_stays_what_asdict_gave() -> None:
    """The tiebreak digest is stored (`version_tiebreak`) and compared with later versions':
    worked out without asdict's deep copy, it must stay byte for byte what asdict gave - for
    every kind of state, nested items, enums and empty values included."""
    states = [
        so.customer_state(sp.customer("cus_1", preferred_locales=["fr-FR", "de"])),
        so.card_state(sp.card_payment_method("pm_1", "cus_1", fingerprint="fp_1")),
        so.subscription_state(sp.subscription("sub_1", "cus_1", default_payment_method="pm_1")),
        so.invoice_state(sp.invoice("in_1", "cus_1", "sub_1", next_payment_attempt=None)),
        so.invoice_state(sp.legacy_invoice("in_2", "cus_1", "sub_1")),
    ]
    for state in states:
        canonical = json.dumps(
            dataclasses.asdict(state), sort_keys=True, default=str, separators=(",", ":")
        )
        digest = hashlib.sha256(canonical.encode()).hexdigest()[:32]
        assert mirror.version_of(1, state).tiebreak == f"0000:{digest}", state
