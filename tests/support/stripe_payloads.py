"""Stripe-shaped payloads built from Stripe's own example objects (tests/fixtures/stripe/).

Tests never hand-write a Stripe object from scratch: they start from the fixture of the current
API version and change the fields the scenario is about. `legacy_*` builders give the
2017-08-15 shapes localstripe sends.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import secrets
from pathlib import Path
from typing import Any

from recovery.domain.signature import sign

# The copy in the repository (origin and licence beside it); RECOVERY_STRIPE_FIXTURES overrides.
FIXTURES = Path(
    os.environ.get("RECOVERY_STRIPE_FIXTURES")
    or Path(__file__).resolve().parents[1] / "fixtures" / "stripe" / "fixtures3.json"
)
CURRENT_API_VERSION = "2026-10-28.endive"


@functools.cache
def _resources() -> dict[str, Any]:
    with FIXTURES.open() as fh:
        data: dict[str, Any] = json.load(fh)["resources"]
    return data


def fixture(kind: str, **changes: Any) -> dict[str, Any]:
    """A deep copy of Stripe's example object of `kind`, with top-level `changes` applied."""
    obj: dict[str, Any] = copy.deepcopy(_resources()[kind])
    obj.update(changes)
    return obj


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def event(
    event_type: str,
    obj: dict[str, Any],
    created: int,
    *,
    event_id: str | None = None,
    api_version: str = CURRENT_API_VERSION,
    previous_attributes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    evt = fixture("event")
    evt.update(
        id=event_id or new_id("evt"),
        type=event_type,
        created=created,
        api_version=api_version,
        livemode=False,
        pending_webhooks=1,
        data={"object": obj},
    )
    if previous_attributes is not None:
        evt["data"]["previous_attributes"] = previous_attributes
    return evt


def body_of(evt: dict[str, Any]) -> bytes:
    return json.dumps(evt, separators=(",", ":")).encode()


def signature_header(body: bytes, secret: str, timestamp: int) -> str:
    return f"t={timestamp},v1={sign(body, secret, timestamp)}"


# ---- current-version objects ------------------------------------------------------------------


def customer(cid: str, **changes: Any) -> dict[str, Any]:
    obj = fixture("customer", id=cid, discount=None)
    obj.update(changes)
    return obj


def card_payment_method(
    pm_id: str,
    customer_id: str | None,
    *,
    brand: str = "visa",
    last4: str = "4242",
    exp_month: int = 8,
    exp_year: int = 2030,
    funding: str = "credit",
    fingerprint: str | None = None,
) -> dict[str, Any]:
    obj = fixture("payment_method", id=pm_id, customer=customer_id)
    obj["card"].update(
        brand=brand,
        display_brand=brand,
        last4=last4,
        exp_month=exp_month,
        exp_year=exp_year,
        funding=funding,
        fingerprint=fingerprint or f"fp_{pm_id[-10:]}",
    )
    return obj


def subscription(
    sub_id: str,
    customer_id: str,
    *,
    status: str = "active",
    price_id: str = "price_monthly",
    product_id: str = "prod_basic",
    unit_amount: int = 2000,
    interval: str = "month",
    period_start: int = 1_700_000_000,
    period_end: int = 1_702_592_000,
    default_payment_method: str | None = None,
    **changes: Any,
) -> dict[str, Any]:
    obj = fixture(
        "subscription",
        id=sub_id,
        customer=customer_id,
        status=status,
        cancel_at=None,
        canceled_at=None,
        ended_at=None,
        pause_collection=None,
        default_payment_method=default_payment_method,
        discounts=[],
        cancel_at_period_end=False,
        trial_end=None,
        trial_start=None,
        latest_invoice=None,
        created=period_start,
    )
    item = obj["items"]["data"][0]
    item.update(id=f"si_{sub_id[-12:]}", subscription=sub_id)
    item["current_period_start"] = period_start
    item["current_period_end"] = period_end
    item["price"].update(
        id=price_id,
        product=product_id,
        unit_amount=unit_amount,
        unit_amount_decimal=str(unit_amount),
    )
    item["price"]["recurring"]["interval"] = interval
    item["plan"].update(
        id=price_id, product=product_id, amount=unit_amount, interval=interval, interval_count=1
    )
    obj["items"]["url"] = f"/v1/subscription_items?subscription={sub_id}"
    obj.update(changes)
    return obj


def invoice(
    inv_id: str,
    customer_id: str,
    subscription_id: str | None,
    *,
    status: str = "open",
    amount_due: int = 2000,
    amount_paid: int = 0,
    attempt_count: int = 0,
    next_payment_attempt: int | None = None,
    billing_reason: str = "subscription_cycle",
    **changes: Any,
) -> dict[str, Any]:
    obj = fixture(
        "invoice",
        id=inv_id,
        customer=customer_id,
        status=status,
        amount_due=amount_due,
        amount_paid=amount_paid,
        amount_remaining=amount_due - amount_paid,
        attempt_count=attempt_count,
        attempted=attempt_count > 0,
        next_payment_attempt=next_payment_attempt,
        billing_reason=billing_reason,
        hosted_invoice_url=f"https://invoice.stripe.com/i/{inv_id}",
        last_finalization_error=None,
        from_invoice=None,
    )
    obj["parent"] = {
        "type": "subscription_details",
        "quote_details": None,
        "subscription_details": {"metadata": {}, "subscription": subscription_id},
    }
    obj["lines"]["data"][0]["invoice"] = inv_id
    obj.update(changes)
    return obj


def failed_charge(
    ch_id: str,
    customer_id: str,
    payment_intent_id: str | None,
    *,
    amount: int = 2000,
    decline_code: str = "insufficient_funds",
    failure_code: str = "card_declined",
    advice_code: str | None = "try_again_later",
    network_advice_code: str | None = None,
    network_decline_code: str | None = "51",
    brand: str = "visa",
    funding: str = "debit",
    created: int = 1_700_000_000,
) -> dict[str, Any]:
    obj = fixture(
        "charge",
        id=ch_id,
        customer=customer_id,
        payment_intent=payment_intent_id,
        amount=amount,
        amount_captured=0,
        captured=False,
        paid=False,
        status="failed",
        failure_code=failure_code,
        failure_message="Your card was declined.",
        created=created,
        source=None,
        transfer_data=None,
    )
    obj["outcome"] = {
        "advice_code": advice_code,
        "network_advice_code": network_advice_code,
        "network_decline_code": network_decline_code,
        "network_status": "declined_by_network",
        "reason": decline_code,
        "risk_level": "normal",
        "seller_message": "The bank did not return any further details with this decline.",
        "type": "issuer_declined",
    }
    obj["payment_method_details"]["card"].update(brand=brand, funding=funding, network=brand)
    return obj


# ---- 2017-08-15 shapes (localstripe) --------------------------------------------------------


def legacy_invoice(
    inv_id: str, customer_id: str, subscription_id: str | None, **changes: Any
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": inv_id,
        "object": "invoice",
        "customer": customer_id,
        "subscription": subscription_id,
        "charge": None,
        "payment_intent": None,
        "status": "open",
        "paid": False,
        "currency": "usd",
        "amount_due": 2000,
        "amount_paid": 0,
        "amount_remaining": 2000,
        "attempt_count": 1,
        "attempted": True,
        "next_payment_attempt": None,
        "billing_reason": "subscription_cycle",
        "created": 1_700_000_000,
        "hosted_invoice_url": None,
        "lines": {"object": "list", "data": []},
    }
    obj.update(changes)
    return obj


def legacy_subscription(sub_id: str, customer_id: str, **changes: Any) -> dict[str, Any]:
    plan = {
        "id": "plan_basic",
        "object": "plan",
        "amount": 2000,
        "currency": "usd",
        "interval": "month",
        "interval_count": 1,
        "product": "prod_basic",
    }
    obj: dict[str, Any] = {
        "id": sub_id,
        "object": "subscription",
        "customer": customer_id,
        "status": "active",
        "plan": plan,
        "items": {
            "object": "list",
            "data": [
                {
                    "id": f"si_{sub_id[-12:]}",
                    "object": "subscription_item",
                    "plan": plan,
                    "quantity": 1,
                }
            ],
        },
        "current_period_start": 1_700_000_000,
        "current_period_end": 1_702_592_000,
        "cancel_at_period_end": False,
        "created": 1_700_000_000,
    }
    obj.update(changes)
    return obj
