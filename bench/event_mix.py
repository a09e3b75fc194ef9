"""A realistic mix of Stripe-shaped webhook events for the load generator.

Built from tests/support/stripe_payloads.py (Stripe's own example objects, fixtures3.json), for a
pool of customers each with a card, a subscription, an invoice and charges. Each template is one
pre-serialised event body with two holes - the event id and `created` - so the load generator
can send a unique, freshly signed event per request without re-serialising 4 KiB of JSON.

Mix (share of events, a subscription business with failing renewals; ASSUMPTION: no public
per-type distribution exists, this follows what one renewal cycle emits):

    invoice.paid 16 %, invoice.payment_failed 14 %, charge.failed 14 %, charge.succeeded 10 %,
    customer.subscription.updated 14 %, customer.updated 10 %, payment_method.attached 8 %,
    invoice.created 6 %, payment_intent.payment_failed 4 %, invoice.finalized 4 %
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support import stripe_payloads as sp  # noqa: E402

MIX: dict[str, int] = {
    "invoice.paid": 16,
    "invoice.payment_failed": 14,
    "charge.failed": 14,
    "charge.succeeded": 10,
    "customer.subscription.updated": 14,
    "customer.updated": 10,
    "payment_method.attached": 8,
    "invoice.created": 6,
    "payment_intent.payment_failed": 4,
    "invoice.finalized": 4,
}

_ID_HOLE = "evt_IDHOLE_7f3a9c"
_CREATED_HOLE = 1_999_999_999  # serialised as a bare number; replaced by the send time
DECLINES = [
    ("insufficient_funds", "51", "try_again_later"),
    ("do_not_honor", "05", "try_again_later"),
    ("generic_decline", "05", None),
    ("expired_card", "54", "do_not_try_again"),
    ("card_velocity_exceeded", "61", "try_again_later"),
]
BRANDS = [("visa", "4242"), ("mastercard", "4444"), ("amex", "8431"), ("visa", "1881")]


@dataclass(frozen=True)
class Template:
    """A serialised event with two holes, the event id and the event's `created`."""

    type: str
    parts: tuple[bytes, bytes, bytes]
    id_first: bool

    def body(self, event_id: str, created: int) -> bytes:
        a, b, c = self.parts
        first, second = event_id.encode(), str(created).encode()
        if not self.id_first:
            first, second = second, first
        return a + first + b + second + c


def _customer_objects(n: int, rng: random.Random) -> dict[str, object]:
    cid = f"cus_bench{n:06d}"
    pm_id = f"pm_bench{n:06d}"
    sub_id = f"sub_bench{n:06d}"
    inv_id = f"in_bench{n:06d}"
    pi_id = f"pi_bench{n:06d}"
    brand, last4 = rng.choice(BRANDS)
    return {
        "cid": cid,
        "pm_id": pm_id,
        "sub_id": sub_id,
        "inv_id": inv_id,
        "pi_id": pi_id,
        "brand": brand,
        "last4": last4,
        "amount": rng.choice([900, 1900, 2900, 4900, 9900]),
        "email": f"customer{n}@example.com",
        "phone": f"+1415555{n % 10000:04d}",
    }


def _object_for(event_type: str, c: dict[str, object], rng: random.Random) -> dict[str, object]:
    cid, pm_id, sub_id = str(c["cid"]), str(c["pm_id"]), str(c["sub_id"])
    inv_id, pi_id, amount = str(c["inv_id"]), str(c["pi_id"]), int(c["amount"])  # type: ignore[call-overload]
    if event_type == "customer.updated":
        return sp.customer(
            cid,
            email=c["email"],
            phone=c["phone"],
            name=f"Customer {cid[-6:]}",
            invoice_settings={
                "custom_fields": None,
                "default_payment_method": pm_id,
                "footer": None,
                "rendering_options": None,
            },
            address={
                "city": "Lyon",
                "country": rng.choice(["US", "FR", "DE", "GB"]),
                "line1": "1 Main St",
                "line2": None,
                "postal_code": "69001",
                "state": None,
            },
        )
    if event_type == "payment_method.attached":
        return sp.card_payment_method(
            pm_id, cid, brand=str(c["brand"]), last4=str(c["last4"]), exp_year=2029
        )
    if event_type == "customer.subscription.updated":
        return sp.subscription(
            sub_id,
            cid,
            status=rng.choice(["active", "active", "past_due", "past_due", "unpaid"]),
            unit_amount=amount,
            default_payment_method=pm_id,
            latest_invoice=inv_id,
        )
    if event_type.startswith("invoice."):
        status = {
            "invoice.paid": "paid",
            "invoice.payment_failed": "open",
            "invoice.created": "draft",
            "invoice.finalized": "open",
        }[event_type]
        attempts = 0 if status == "draft" else rng.randint(1, 4)
        paid = status == "paid"
        obj = sp.invoice(
            inv_id,
            cid,
            sub_id,
            status=status,
            amount_due=amount,
            amount_paid=amount if paid else 0,
            attempt_count=attempts,
            next_payment_attempt=None if paid else 1_800_000_000,
            customer_email=c["email"],
            customer_phone=c["phone"],
        )
        obj["payments"] = {
            "object": "list",
            "data": [{"payment": {"type": "payment_intent", "payment_intent": pi_id}}],
            "has_more": False,
            "url": f"/v1/invoices/{inv_id}/payments",
        }
        return obj
    if event_type in ("charge.failed", "charge.succeeded"):
        decline, network, advice = rng.choice(DECLINES)
        ch = sp.failed_charge(
            f"ch_bench{rng.randrange(10**9):09d}",
            cid,
            pi_id,
            amount=amount,
            decline_code=decline,
            network_decline_code=network,
            advice_code=advice,
            brand=str(c["brand"]),
        )
        ch["payment_method"] = pm_id
        ch["payment_method_details"]["card"]["last4"] = c["last4"]
        ch["billing_details"]["email"] = c["email"]
        ch["billing_details"]["phone"] = c["phone"]
        if event_type == "charge.succeeded":
            ch.update(
                status="succeeded",
                paid=True,
                captured=True,
                amount_captured=amount,
                failure_code=None,
                failure_message=None,
            )
            ch["outcome"] = {
                "advice_code": None,
                "network_advice_code": None,
                "network_decline_code": None,
                "network_status": "approved_by_network",
                "reason": None,
                "risk_level": "normal",
                "seller_message": "Payment complete.",
                "type": "authorized",
            }
        return ch
    if event_type == "payment_intent.payment_failed":
        decline, network, advice = rng.choice(DECLINES)
        pm = sp.card_payment_method(pm_id, cid, brand=str(c["brand"]), last4=str(c["last4"]))
        return sp.fixture(
            "payment_intent",
            id=pi_id,
            customer=cid,
            amount=amount,
            status="requires_payment_method",
            canceled_at=None,
            next_action=None,
            latest_charge=None,
            transfer_data=None,
            client_secret=f"{pi_id}_secret_bench",
            last_payment_error={
                "type": "card_error",
                "code": "card_declined",
                "decline_code": decline,
                "advice_code": advice,
                "network_decline_code": network,
                "message": "Your card was declined.",
                "charge": f"ch_benchpi{rng.randrange(10**9):09d}",
                "payment_method": pm,
            },
        )
    raise ValueError(event_type)


def build_templates(seed: int = 7, customers: int = 2000, count: int = 4000) -> list[Template]:
    """`count` event templates over `customers` customers, drawn with the MIX weights."""
    rng = random.Random(seed)
    pool = [_customer_objects(n, rng) for n in range(customers)]
    types, weights = zip(*MIX.items(), strict=True)
    templates = []
    for _ in range(count):
        event_type = rng.choices(types, weights)[0]
        obj = _object_for(event_type, rng.choice(pool), rng)
        evt = sp.event(event_type, obj, _CREATED_HOLE, event_id=_ID_HOLE)
        text = json.dumps(evt, separators=(",", ":"))
        id_hole, created_hole = f'"{_ID_HOLE}"', f'"created":{_CREATED_HOLE}'
        if text.count(id_hole) != 1 or text.count(str(_CREATED_HOLE)) != 1:
            raise RuntimeError("template holes not found exactly once")
        i, j = text.index(id_hole) + 1, text.index(created_hole) + len('"created":')
        i_end, j_end = i + len(_ID_HOLE), j + len(str(_CREATED_HOLE))
        if i < j:
            parts = (text[:i], text[i_end:j], text[j_end:])
        else:
            parts = (text[:j], text[j_end:i], text[i_end:])
        encoded = (parts[0].encode(), parts[1].encode(), parts[2].encode())
        templates.append(Template(event_type, encoded, id_first=i < j))
    return templates


if __name__ == "__main__":  # a quick look at the mix
    from collections import Counter

    ts = build_templates()
    sizes = [len(t.body("evt_x", 1)) for t in ts]
    print(Counter(t.type for t in ts).most_common())
    mean = sum(sizes) // len(sizes)
    print(f"{len(ts)} templates, body size {min(sizes)}..{max(sizes)} B, mean {mean} B")
    body = ts[0].body("evt_123", 1_700_000_000)
    evt = json.loads(body)
    print(evt["id"], evt["type"], evt["created"])
