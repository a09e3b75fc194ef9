"""The in-memory gateway: same contract as the SDK one, Stripe-shaped objects, Stripe's
idempotency semantics, and the failures tests program into it."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from recovery.adapters.stripe.errors import (
    AuthenticationRequired,
    CardDeclined,
    IdempotencyConflict,
    InvalidRequest,
    NotFound,
    RateLimited,
    Unavailable,
)
from recovery.adapters.stripe.protocol import StripeGateway
from recovery.adapters.stripe.sdk import StripeSdkGateway
from recovery.adapters.stripe_fake import FakeRequest, FakeStripeGateway
from recovery.domain.stripe_objects.attempts import attempt_from_charge
from recovery.domain.stripe_objects.states import (
    card_state,
    customer_state,
    invoice_state,
    subscription_state,
)
from tests.support import stripe_payloads as sp


def protocol_methods() -> list[str]:
    return sorted(
        name
        for name, member in vars(StripeGateway).items()
        if not name.startswith("_") and inspect.isfunction(member)
    )


def signature(cls: type, name: str) -> list[tuple[str, Any, Any, Any]]:
    sig = inspect.signature(getattr(cls, name))
    return [(p.name, p.kind, p.default, p.annotation) for p in sig.parameters.values()] + [
        ("return", None, None, sig.return_annotation)
    ]


@pytest.mark.parametrize("name", protocol_methods())
def test_the_fake_and_the_sdk_gateway_have_the_protocols_exact_signatures(name: str) -> None:
    expected = signature(StripeGateway, name)
    assert signature(StripeSdkGateway, name) == expected
    assert signature(FakeStripeGateway, name) == expected


def test_both_implement_every_protocol_member() -> None:
    members = {n for n in vars(StripeGateway) if not n.startswith("_")}
    assert members == {*protocol_methods(), "livemode"}
    for cls in (StripeSdkGateway, FakeStripeGateway):
        assert isinstance(inspect.getattr_static(cls, "livemode"), property)
        assert members <= set(dir(cls))
    gateway: StripeGateway = FakeStripeGateway()  # mypy checks the match in recovery/ (_CONFORMS)
    assert gateway.livemode is False


# ---- shapes --------------------------------------------------------------------------------------


@pytest.fixture
def fake() -> FakeStripeGateway:
    return FakeStripeGateway()


@pytest.fixture
def seeded(fake: FakeStripeGateway) -> dict[str, Any]:
    customer = fake.add_customer(email="ada@example.com", name="Ada", country="fr")
    card = fake.add_payment_method(customer["id"], brand="mastercard", last4="4444")
    fake.update_customer_default_payment_method(customer["id"], card["id"], idempotency_key="d")
    price = fake.add_price(unit_amount=1500)
    sub = fake.add_subscription(customer["id"], price_id=price["id"])
    invoice = fake.add_invoice(customer["id"], subscription_id=sub["id"], attempt_count=1)
    return {"customer": customer, "card": card, "price": price, "sub": sub, "invoice": invoice}


def test_objects_have_the_pinned_versions_shape(
    fake: FakeStripeGateway, seeded: dict[str, Any]
) -> None:
    fake.fail_next_payment(seeded["invoice"]["id"])
    with pytest.raises(CardDeclined):
        fake.pay_invoice(seeded["invoice"]["id"], idempotency_key="p")
    fake.add_coupon("OFF20")
    fake.apply_subscription_coupon(seeded["sub"]["id"], "OFF20", idempotency_key="c")
    session = fake.create_checkout_setup_session(
        customer_id=seeded["customer"]["id"],
        success_url="https://example.com/ok",
        cancel_url="https://example.com/no",
        metadata={},
        idempotency_key="cs",
    )
    samples = {
        "customer": fake.retrieve_customer(seeded["customer"]["id"]),
        "payment_method": fake.retrieve_payment_method(seeded["card"]["id"]),
        "price": seeded["price"],
        "subscription": fake.retrieve_subscription(seeded["sub"]["id"]),
        "subscription_item": seeded["sub"]["items"]["data"][0],
        "invoice": fake.retrieve_invoice(seeded["invoice"]["id"]),
        "charge": next(iter(fake.store["charge"].values())),
        "payment_intent": next(iter(fake.store["payment_intent"].values())),
        "invoice_payment": next(iter(fake.store["invoice_payment"].values())),
        "discount": next(iter(fake.store["discount"].values())),
        "coupon": fake.store["coupon"]["OFF20"],
        "checkout.session": session,
        "setup_intent": fake.retrieve_setup_intent(session["setup_intent"]),
        "event": fake.events[0],
    }
    for kind, obj in samples.items():
        extra = set(obj) - set(sp.fixture(kind))
        assert not extra, f"the fake's {kind} has fields Stripe's has not: {extra}"
        assert obj["object"] == kind
    invoice, sub = samples["invoice"], samples["subscription"]
    assert "subscription" not in invoice and "payment_intent" not in invoice  # gone in basil
    assert invoice["parent"]["subscription_details"]["subscription"] == sub["id"]
    assert "current_period_end" not in sub and sub["items"]["data"][0]["current_period_end"]
    assert sub["discounts"] == [samples["discount"]["id"]]
    # and the mappers read them
    assert invoice_state(invoice).subscription_id == sub["id"]
    assert subscription_state(sub).current_period_end is not None
    assert customer_state(samples["customer"]).address_country == "FR"
    assert card_state(samples["payment_method"]).brand == "mastercard"
    attempt = attempt_from_charge(samples["charge"])
    assert (attempt.status, attempt.decline_code, attempt.card_last4) == (
        "failed",
        "generic_decline",
        "4444",
    )


def test_put_stores_raw_fixture_objects(fake: FakeStripeGateway) -> None:
    fake.put(sp.invoice("in_fix", "cus_fix", "sub_fix", attempt_count=2))
    assert invoice_state(fake.retrieve_invoice("in_fix")).attempt_count == 2
    assert [i["id"] for i in fake.iter_invoices("open")] == ["in_fix"]


# ---- idempotency ---------------------------------------------------------------------------------


def test_same_key_same_params_replays_without_a_second_effect(
    fake: FakeStripeGateway, seeded: dict[str, Any]
) -> None:
    inv = seeded["invoice"]["id"]
    first = fake.pay_invoice(inv, idempotency_key="pay:1")
    again = fake.pay_invoice(inv, idempotency_key="pay:1")
    assert first == again and first["status"] == "paid"
    assert len(fake.store["charge"]) == 1 and again["attempt_count"] == 2
    assert [r.method for r in fake.requests[-2:]] == ["pay_invoice", "pay_invoice"]
    assert fake.requests[-1] == (
        "pay_invoice",
        {"id": inv, "payment_method": None, "off_session": True},
        "pay:1",
    )
    with pytest.raises(InvalidRequest):  # a new key really tries again: already paid
        fake.pay_invoice(inv, idempotency_key="pay:2")


def test_same_key_other_params_is_an_idempotency_error(
    fake: FakeStripeGateway, seeded: dict[str, Any]
) -> None:
    sub = seeded["sub"]["id"]
    fake.pause_subscription(sub, behavior="void", idempotency_key="k")
    with pytest.raises(IdempotencyConflict) as caught:
        fake.pause_subscription(sub, behavior="keep_as_draft", idempotency_key="k")
    assert caught.value.code == "idempotency_error" and not caught.value.transient
    with pytest.raises(IdempotencyConflict):  # another endpoint under the same key
        fake.resume_subscription(sub, idempotency_key="k")
    assert fake.retrieve_subscription(sub)["pause_collection"]["behavior"] == "void"


def test_a_decline_is_replayed_but_a_validation_error_is_not(
    fake: FakeStripeGateway, seeded: dict[str, Any]
) -> None:
    inv = seeded["invoice"]["id"]
    fake.fail_next_payment(inv, "insufficient_funds")
    with pytest.raises(CardDeclined) as first:
        fake.pay_invoice(inv, idempotency_key="pay:a")
    with pytest.raises(CardDeclined) as replay:  # Stripe cached the attempt's result
        fake.pay_invoice(inv, idempotency_key="pay:a")
    assert replay.value.charge_id == first.value.charge_id and len(fake.store["charge"]) == 1

    bare = fake.add_customer()
    lone = fake.add_invoice(bare["id"])
    with pytest.raises(InvalidRequest):  # no payment method: validation, not cached
        fake.pay_invoice(lone["id"], idempotency_key="pay:b")
    card = fake.add_payment_method(bare["id"])
    fake.update_customer_default_payment_method(bare["id"], card["id"], idempotency_key="dpm")
    assert fake.pay_invoice(lone["id"], idempotency_key="pay:b")["status"] == "paid"


def test_writes_need_a_key(fake: FakeStripeGateway, seeded: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        fake.mark_uncollectible(seeded["invoice"]["id"], idempotency_key="")


# ---- outages -------------------------------------------------------------------------------------


def test_outages_fail_the_next_calls_with_transient_errors(
    fake: FakeStripeGateway, seeded: dict[str, Any]
) -> None:
    cid = seeded["customer"]["id"]
    fake.outage(2)
    for _ in range(2):
        with pytest.raises(RateLimited) as caught:
            fake.retrieve_customer(cid)
        assert caught.value.transient and caught.value.http_status == 429
    assert fake.retrieve_customer(cid)["id"] == cid

    fake.outage(1, kind="server_error", after=1, methods={"pay_invoice"})
    fake.retrieve_customer(cid)  # other methods are not affected
    fake.fail_next_payment(seeded["invoice"]["id"])
    with pytest.raises(CardDeclined):  # the first pay_invoice passes (after=1)
        fake.pay_invoice(seeded["invoice"]["id"], idempotency_key="p1")
    with pytest.raises(Unavailable) as down:
        fake.pay_invoice(seeded["invoice"]["id"], idempotency_key="p2")
    assert down.value.transient and down.value.http_status == 500
    # the outage hit before Stripe ran anything: the same key then works
    assert fake.pay_invoice(seeded["invoice"]["id"], idempotency_key="p2")["status"] == "paid"
    with pytest.raises(ValueError):
        fake.outage(1, kind="earthquake")


def test_an_outage_mid_iteration_and_resuming_from_the_cursor() -> None:
    fake = FakeStripeGateway(page_size=2)
    ids = [fake.add_customer(created=1_800_000_000 + n)["id"] for n in range(5)]
    newest_first = list(reversed(ids))
    assert [c["id"] for c in fake.iter_customers()] == newest_first
    fake.outage(1, kind="server_error", after=1, methods={"iter_customers"})
    seen: list[str] = []
    with pytest.raises(Unavailable):
        for customer in fake.iter_customers():
            seen.append(customer["id"])
    assert seen == newest_first[:2]
    rest = [c["id"] for c in fake.iter_customers(starting_after=seen[-1])]
    assert seen + rest == newest_first
    pages = [r.params for r in fake.requests if r.method == "iter_customers"][-3:]
    assert pages[-1] == {"limit": 2, "starting_after": newest_first[3]}


# ---- programmed payment outcomes -----------------------------------------------------------------


def test_programmed_declines_carry_network_fields(
    fake: FakeStripeGateway, seeded: dict[str, Any]
) -> None:
    inv, sub = seeded["invoice"]["id"], seeded["sub"]["id"]
    fake.fail_next_payment(
        inv,
        "do_not_honor",
        advice_code="do_not_try_again",
        network_advice_code="03",
        network_decline_code="05",
        brand="visa",
    )
    with pytest.raises(CardDeclined) as caught:
        fake.pay_invoice(inv, idempotency_key="p1")
    declined = caught.value
    assert (declined.decline_code, declined.advice_code) == ("do_not_honor", "do_not_try_again")
    assert (declined.network_advice_code, declined.network_decline_code) == ("03", "05")
    assert declined.card_brand == "visa" and declined.payment_method_id == seeded["card"]["id"]
    assert declined.charge_id in fake.store["charge"]
    assert fake.retrieve_subscription(sub)["status"] == "past_due"
    assert fake.retrieve_invoice(inv)["attempt_count"] == 2

    paid = fake.pay_invoice(inv, idempotency_key="p2")  # the script is used up
    assert paid["status"] == "paid" and paid["status_transitions"]["paid_at"]
    assert fake.retrieve_subscription(sub)["status"] == "active"
    types = [e["type"] for e in fake.events]
    assert types[-4:] == [
        "charge.succeeded",
        "invoice.paid",
        "invoice.payment_succeeded",
        "customer.subscription.updated",
    ]
    assert "invoice.payment_failed" in types


def test_card_flags_decline_or_require_authentication(fake: FakeStripeGateway) -> None:
    customer = fake.add_customer()
    bad = fake.add_payment_method(customer["id"], declines_with="expired_card")
    three_ds = fake.add_payment_method(customer["id"], requires_authentication=True)
    invoice = fake.add_invoice(customer["id"])
    with pytest.raises(CardDeclined) as declined:
        fake.pay_invoice(invoice["id"], idempotency_key="a", payment_method=bad["id"])
    assert declined.value.decline_code == "expired_card"
    with pytest.raises(AuthenticationRequired) as auth:
        fake.pay_invoice(invoice["id"], idempotency_key="b", payment_method=three_ds["id"])
    assert auth.value.hosted_invoice_url == invoice["hosted_invoice_url"]
    assert auth.value.payment_intent_id in fake.store["payment_intent"]
    assert fake.store["payment_intent"][auth.value.payment_intent_id]["status"] == "requires_action"

    fake.require_authentication(invoice["id"])
    good = fake.add_payment_method(customer["id"])
    with pytest.raises(AuthenticationRequired):
        fake.pay_invoice(invoice["id"], idempotency_key="c", payment_method=good["id"])
    assert (
        fake.pay_invoice(invoice["id"], idempotency_key="d", payment_method=good["id"])["status"]
        == "paid"
    )
    stranger = fake.add_payment_method(fake.add_customer()["id"])
    other = fake.add_invoice(customer["id"])
    with pytest.raises(InvalidRequest):
        fake.pay_invoice(other["id"], idempotency_key="e", payment_method=stranger["id"])


# ---- the other writes ----------------------------------------------------------------------------


def test_subscription_changes(fake: FakeStripeGateway, seeded: dict[str, Any]) -> None:
    sub, cid = seeded["sub"], seeded["customer"]["id"]
    item = sub["items"]["data"][0]["id"]
    yearly = fake.add_price(unit_amount=15000, interval="year")
    changed = fake.change_subscription_price(
        sub["id"],
        item_id=item,
        price_id=yearly["id"],
        proration_behavior="none",
        idempotency_key="chg",
    )
    state = subscription_state(changed)
    assert [(i.id, i.price_id, i.interval) for i in state.items] == [(item, yearly["id"], "year")]
    with pytest.raises(InvalidRequest):
        fake.change_subscription_price(
            sub["id"],
            item_id="si_nope",
            price_id=yearly["id"],
            proration_behavior="none",
            idempotency_key="chg2",
        )

    paused = fake.pause_subscription(
        sub["id"], behavior="mark_uncollectible", resumes_at=1_900_000_000, idempotency_key="p"
    )
    assert subscription_state(paused).pause_behavior == "mark_uncollectible"
    assert paused["status"] == "active"  # pausing collection keeps the status
    assert fake.resume_subscription(sub["id"], idempotency_key="r")["pause_collection"] is None

    card = fake.add_payment_method(cid)
    assert (
        fake.set_subscription_default_payment_method(sub["id"], card["id"], idempotency_key="s")[
            "default_payment_method"
        ]
        == card["id"]
    )
    stranger = fake.add_payment_method(None)
    with pytest.raises(InvalidRequest):
        fake.set_subscription_default_payment_method(sub["id"], stranger["id"], idempotency_key="t")
    with pytest.raises(InvalidRequest):  # a parameter the pinned API does not have
        fake.update_subscription(sub["id"], idempotency_key="u", coupon="OFF")
    with pytest.raises(InvalidRequest):
        fake.apply_subscription_coupon(sub["id"], "NOPE", idempotency_key="v")
    updated = fake.update_subscription(sub["id"], idempotency_key="w", metadata={"a": "1"})
    assert updated["metadata"] == {"a": "1"}
    with pytest.raises(NotImplementedError):
        fake.update_subscription(sub["id"], idempotency_key="x", trial_end="now")


def test_cancelling(fake: FakeStripeGateway, seeded: dict[str, Any]) -> None:
    sub, inv = seeded["sub"]["id"], seeded["invoice"]["id"]
    at_end = fake.cancel_subscription(
        sub, at_period_end=True, feedback="too_expensive", comment="pricey", idempotency_key="c1"
    )
    state = subscription_state(at_end)
    assert state.cancel_at_period_end and state.cancel_at == state.current_period_end
    assert (state.cancellation_feedback, state.status) == ("too_expensive", "active")
    with pytest.raises(InvalidRequest):
        fake.cancel_subscription(sub, at_period_end=True, feedback="meh", idempotency_key="c2")

    ended = fake.cancel_subscription(sub, at_period_end=False, idempotency_key="c3")
    assert ended["status"] == "canceled" and ended["ended_at"]
    assert fake.retrieve_invoice(inv)["auto_advance"] is False  # Stripe stops collecting it
    assert fake.events[-1]["type"] == "customer.subscription.deleted"
    count = len(fake.events)
    again = fake.cancel_subscription(sub, at_period_end=False, idempotency_key="c4")
    assert again["status"] == "canceled" and len(fake.events) == count


def test_invoice_writes(fake: FakeStripeGateway, seeded: dict[str, Any]) -> None:
    inv = seeded["invoice"]["id"]
    updated = fake.update_invoice(inv, idempotency_key="u", auto_advance=False, metadata={"a": "b"})
    assert (updated["auto_advance"], updated["metadata"]) == (False, {"a": "b"})
    gone = fake.mark_uncollectible(inv, idempotency_key="m")
    assert (
        gone["status"] == "uncollectible" and gone["status_transitions"]["marked_uncollectible_at"]
    )
    assert [i["id"] for i in fake.iter_invoices("uncollectible")] == [inv]
    assert fake.pay_invoice(inv, idempotency_key="p")["status"] == "paid"  # still payable
    with pytest.raises(NotFound):
        fake.retrieve_invoice("in_missing")


def test_checkout_setup_flow(fake: FakeStripeGateway, seeded: dict[str, Any]) -> None:
    cid, sub = seeded["customer"]["id"], seeded["sub"]["id"]
    session = fake.create_checkout_setup_session(
        customer_id=cid,
        success_url="https://example.com/ok",
        cancel_url="https://example.com/no",
        metadata={"subscription_id": sub},
        locale="fr",
        idempotency_key="cs:1",
    )
    assert (session["mode"], session["status"], session["locale"]) == ("setup", "open", "fr")
    assert session["url"].startswith("https://checkout.stripe.com/")
    fake.complete_checkout_session(session["id"], brand="amex", last4="0005")
    done = fake.retrieve_checkout_session(session["id"])
    intent = done["setup_intent"]
    assert done["status"] == "complete" and intent["status"] == "succeeded"
    assert intent["metadata"] == {"subscription_id": sub}
    assert card_state(intent["payment_method"]).brand == "amex"
    assert (
        fake.retrieve_setup_intent(intent["id"])["payment_method"]["id"]
        == intent["payment_method"]["id"]
    )
    cards = fake.list_customer_payment_methods(cid)
    assert len(cards) == 2 and cards[0]["card"]["last4"] == "0005"  # newest first
    assert [e["type"] for e in fake.events[-2:]] == [
        "setup_intent.succeeded",
        "checkout.session.completed",
    ]
    with pytest.raises(InvalidRequest):
        fake.create_checkout_setup_session(
            customer_id="cus_nope",
            success_url="https://example.com/ok",
            cancel_url="https://example.com/no",
            metadata={},
            idempotency_key="cs:2",
        )


def test_lists_filter_and_keep_cursors_valid(fake: FakeStripeGateway) -> None:
    customer = fake.add_customer()
    sub = fake.add_subscription(customer["id"])
    fake.add_subscription(customer["id"], status="canceled")
    assert len(list(fake.iter_subscriptions())) == 2
    assert [s["id"] for s in fake.iter_subscriptions(status="active")] == [sub["id"]]
    first = fake.add_invoice(customer["id"], created=1_800_000_100)
    second = fake.add_invoice(customer["id"], created=1_800_000_000)
    fake.store["invoice"][first["id"]]["status"] = "paid"  # paid since the last page was read
    assert [i["id"] for i in fake.iter_invoices("open", starting_after=first["id"])] == [
        second["id"]
    ]
    fake.add_event("invoice.created", first, created=1_700_000_000)
    fake.add_event("invoice.created", second, created=1_800_000_000)
    assert [e["data"]["object"]["id"] for e in fake.iter_events(1_750_000_000)] == [second["id"]]
    assert isinstance(fake.requests[0], FakeRequest)
