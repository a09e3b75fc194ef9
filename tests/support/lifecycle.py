"""A generated billing lifecycle: many customers' lives told as the Stripe events, in true order.

Each customer signs up, saves a card and subscribes; then months of renewals, some failing with
real decline details and then recovering (retry, new card, card updater, 3-D Secure on the hosted
page) or being lost (written off or voided, subscription cancelled), plus voluntary cancellations,
pauses, card changes and deleted customers. A few customers live on an endpoint pinned to API
2017-08-15 and get the legacy shapes. Every payload starts from Stripe's example objects
(tests/support/stripe_payloads.py over fixtures3.json).

`deliveries()` then turns the true order into what an endpoint sees: shuffled, redelivered, and
with the odd second Event object Stripe creates for one change (docs/stripe.md#webhook-delivery).

Timestamps follow Stripe: per object each event is later than the one before, except the bursts
Stripe really sends within one second for one invoice (finalized and charged, paid and
payment_succeeded, payment_failed with invoice.updated). `_Log.events()` checks that.
"""

from __future__ import annotations

import calendar
import random
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.support import stripe_payloads as sp

LEGACY_API_VERSION = "2017-08-15"
START = 1_767_225_600  # 2026-01-01T00:00:00Z
SIGNUPS = 120 * 86_400  # customers sign up over four months...
NOW = START + 200 * 86_400  # ...and the account is looked at on 2026-07-20: later events are cut
MINUTE, HOUR, DAY = 60, 3_600, 86_400
MAX_ATTEMPTS = 4
RETRY_DAYS = (3, 5, 7)  # days from failed attempt n to attempt n + 1 (a Smart Retries-like spread)
_ALNUM = string.ascii_letters + string.digits

PLANS = (  # (price, product, unit_amount, currency)
    ("price_basic_monthly", "prod_basic", 900, "usd"),
    ("price_pro_monthly", "prod_pro", 2900, "usd"),
    ("price_team_monthly", "prod_team", 9900, "usd"),
    ("price_pro_monthly_eur", "prod_pro", 2700, "eur"),
)
WALLETS = ("apple_pay", "google_pay")
BRANDS = (("visa", 50), ("mastercard", 35), ("amex", 15))
LEGACY_BRAND = {"visa": "Visa", "mastercard": "MasterCard", "amex": "American Express"}
LAST4 = {
    "visa": ("4242", "1881", "0077", "3155"),
    "mastercard": ("4444", "5100", "8210"),
    "amex": ("0005", "8431"),
}

# decline -> (failure_code, advice_code, network_decline_code choices (Visa, Mastercard),
#             Mastercard network_advice_code choices). Sources: docs.stripe.com/declines/codes;
# Visa / Mastercard response codes 51 funds, 05 do not honor, 14 invalid account, 54 expired;
# Mastercard Merchant Advice Codes 24 retry after 1 h, 03 do not try again, 21 payment cancelled.
Codes = tuple[str | None, ...]
DECLINES: dict[str, tuple[str, str | None, Codes, Codes]] = {
    "insufficient_funds": ("card_declined", "try_again_later", ("51",), ("24", None)),
    "generic_decline": ("card_declined", "try_again_later", ("05", "14"), ("24", None)),
    "do_not_honor": ("card_declined", "try_again_later", ("05",), ("21", None)),
    "expired_card": ("expired_card", "confirm_card_data", ("54",), ("03",)),
    "lost_card": ("card_declined", "do_not_try_again", ("05", "14"), ("03",)),
    "authentication_required": ("authentication_required", None, (None,), (None,)),
}
MESSAGES = {
    "insufficient_funds": "Your card has insufficient funds.",
    "expired_card": "Your card has expired.",
    "authentication_required": "Your card was declined. This transaction requires authentication.",
}
SOFT = ("insufficient_funds", "generic_decline", "do_not_honor")


@dataclass
class _Card:
    id: str
    brand: str
    funding: str
    last4: str
    exp_month: int
    exp_year: int
    fingerprint: str
    created: int
    wallet: str | None
    customer: str | None

    def expired_at(self, ts: int) -> bool:  # valid through the last day of its expiry month
        y, m = divmod(self.exp_month, 12)
        return ts >= int(datetime(self.exp_year + y, m + 1, 1, tzinfo=UTC).timestamp())


@dataclass
class _Invoice:
    id: str
    number: str
    created: int
    period_start: int
    period_end: int
    billing_reason: str
    status: str = "draft"
    attempt_count: int = 0
    next_payment_attempt: int | None = None
    auto_advance: bool = True
    transitions: dict[str, int | None] = field(
        default_factory=lambda: dict.fromkeys(
            ("finalized_at", "marked_uncollectible_at", "paid_at", "voided_at")
        )
    )
    intent: str | None = None
    intent_created: int = 0
    charge: str | None = None


@dataclass
class _Row:
    created: int
    story: int
    seq: int
    event: dict[str, Any]
    touches: tuple[str, ...]  # versioned objects (customer, card, subscription, invoice)
    burst: bool  # may share its second with the previous event about the same object


class _Log:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.rows: list[_Row] = []
        self._ids: set[str] = set()
        self._envelopes: dict[str, dict[str, Any]] = {}

    def new_id(self, prefix: str, length: int = 24) -> str:
        while True:
            oid = f"{prefix}_{''.join(self.rng.choices(_ALNUM, k=length))}"
            if oid not in self._ids and oid[-12:] not in self._ids:
                self._ids.update((oid, oid[-12:]))  # subscription items are named from [-12:]
                return oid

    def envelope(self, legacy: bool) -> dict[str, Any]:
        """Stripe's example event minus id, type, created and data, which each event sets."""
        version = LEGACY_API_VERSION if legacy else sp.CURRENT_API_VERSION
        if version not in self._envelopes:
            evt = sp.event("ping", {}, 0, event_id="evt_envelope", api_version=version)
            self._envelopes[version] = {
                k: v for k, v in evt.items() if k not in ("id", "type", "created", "data")
            }
        return self._envelopes[version]

    def events(self, until: int) -> list[dict[str, Any]]:
        self.rows = sorted(
            (r for r in self.rows if r.created <= until), key=lambda r: (r.created, r.story, r.seq)
        )
        last: dict[str, int] = {}
        for row in self.rows:
            for oid in row.touches:
                before = last.get(oid)
                if before is not None and (
                    row.created < before or (row.created == before and not row.burst)
                ):
                    raise AssertionError(f"{row.event['type']} for {oid} not after {before}")
                last[oid] = row.created
        return [r.event for r in self.rows]


def _clone(obj: Any) -> Any:
    """A deep copy of JSON data (dicts, lists, scalars): a third of the time of a JSON round
    trip, which was most of the generation's, and the same result."""
    if isinstance(obj, dict):
        return {k: _clone(v) if isinstance(v, dict | list) else v for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clone(v) if isinstance(v, dict | list) else v for v in obj]
    return obj


def _add_months(anchor: int, months: int) -> int:
    d = datetime.fromtimestamp(anchor, UTC)
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    day = min(d.day, calendar.monthrange(year, month)[1])
    return int(d.replace(year=year, month=month, day=day).timestamp())


class _Story:
    """One customer's life. Methods emit in chronological order; `self.now` only moves forward."""

    def __init__(self, log: _Log, number: int, *, legacy: bool) -> None:
        self.log, self.rng, self.number, self.legacy = log, log.rng, number, legacy
        self.automations = not legacy and self.rng.random() < 0.25
        self.seq = 0
        self.now = START + self.rng.randrange(SIGNUPS)
        self.cus = log.new_id("cus", 14)
        self.sub = log.new_id("sub")
        self.price, self.product, self.amount, self.currency = self.rng.choice(PLANS)
        first = self.rng.choice(("Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Radia"))
        self.name = f"{first} {self.rng.choice(('Lovelace', 'Hopper', 'Turing', 'Liskov'))}"
        self.email = f"{first.lower()}.{self.number}@example.com"
        self.country = self.rng.choice(("US", "US", "US", "GB", "DE", "FR", "CA"))
        self.card: _Card | None = None
        self.sub_fields: dict[str, Any] = {
            "status": "active",
            "cancel_at_period_end": False,
            "cancel_at": None,
            "canceled_at": None,
            "ended_at": None,
            "pause_collection": None,
            "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        }
        self.period = 0
        self.anchor = 0
        self.sub_created = 0
        self.latest_invoice: str | None = None
        self.invoice_count = 0
        self.created_at = self.now
        self.bases: dict[str, dict[str, Any]] = {}

    # ---- emitting -------------------------------------------------------------------------------

    def emit(
        self,
        kind: str,
        obj: dict[str, Any],
        *,
        burst: bool = False,
        touches: tuple[str, ...] | None = None,
        previous: dict[str, Any] | None = None,
        request: bool = False,
    ) -> None:
        evt = {
            **self.log.envelope(self.legacy),
            "id": self.log.new_id("evt"),
            "type": kind,
            "created": self.now,
            "data": {"object": obj},
        }
        if previous is not None:
            evt["data"]["previous_attributes"] = previous
        if request:  # a change made through the API (Dashboard, portal, our own calls)
            evt["request"] = {"id": self.log.new_id("req", 14), "idempotency_key": None}
        if touches is None:
            touches = (obj["id"],) if obj.get("id") else ()
        self.seq += 1
        self.log.rows.append(_Row(self.now, self.number, self.seq, evt, touches, burst))

    def tick(self, low: int, high: int) -> int:
        self.now += self.rng.randint(low, high)
        return self.now

    def from_base(self, key: str, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """A fresh copy of this story's `key` object, built by the payload builders once.

        Deep-copying Stripe's example objects for each of ~100,000 events costs most of the
        generation time; copying a per-story base (`_clone`) is several times cheaper."""
        base = self.bases.get(key)
        if base is None:
            base = self.bases[key] = build()
        return _clone(base)

    # ---- objects --------------------------------------------------------------------------------

    def _customer_base(self) -> dict[str, Any]:
        obj = sp.customer(
            self.cus,
            email=self.email,
            name=self.name,
            created=self.created_at,
            currency=self.currency,
            invoice_prefix=self.cus[-8:].upper(),
            preferred_locales=["en"] if self.country != "DE" else ["de", "en"],
            metadata={"account": f"acct-{self.number}"},
        )
        obj["address"]["country"] = self.country
        if self.legacy:  # 2017: sources on the customer, no invoice_settings yet
            for key in ("invoice_settings", "test_clock", "customer_account"):
                obj.pop(key, None)
            obj["sources"] = {
                "object": "list",
                "data": [],
                "has_more": False,
                "url": f"/v1/customers/{self.cus}/sources",
            }
        return obj

    def customer_obj(self) -> dict[str, Any]:
        obj = self.from_base("customer", self._customer_base)
        default = self.card.id if self.card else None
        if self.legacy:
            obj["default_source"] = default
            obj["sources"]["data"] = [self.card_obj()] if self.card else []
        else:
            obj["invoice_settings"]["default_payment_method"] = default
        return obj

    def card_obj(self, card: _Card | None = None) -> dict[str, Any]:
        card = card or self.card
        assert card is not None
        if self.legacy:
            return sp.fixture(
                "card",
                id=card.id,
                customer=card.customer,
                brand=LEGACY_BRAND[card.brand],
                funding=card.funding,
                last4=card.last4,
                exp_month=card.exp_month,
                exp_year=card.exp_year,
                fingerprint=card.fingerprint,
                country="US",
                name=self.name,
            )
        obj = sp.card_payment_method(
            card.id,
            card.customer,
            brand=card.brand,
            last4=card.last4,
            exp_month=card.exp_month,
            exp_year=card.exp_year,
            funding=card.funding,
            fingerprint=card.fingerprint,
        )
        obj.update(created=card.created, metadata={})
        obj["billing_details"].update(email=self.email, name=self.name)
        obj["card"]["country"] = "US"
        obj["card"]["networks"]["available"] = [card.brand]
        obj["card"]["wallet"] = (
            {"type": card.wallet, "dynamic_last4": card.last4, card.wallet: {}}
            if card.wallet
            else None
        )
        return obj

    def _subscription_base(self) -> dict[str, Any]:
        if self.legacy:
            obj = sp.legacy_subscription(
                self.sub,
                self.cus,
                created=self.sub_created,
                start=self.sub_created,
                billing="charge_automatically",
            )
            for plan in (obj["plan"], obj["items"]["data"][0]["plan"]):
                plan.update(
                    id=self.price, product=self.product, amount=self.amount, currency=self.currency
                )
            return obj
        obj = sp.subscription(
            self.sub,
            self.cus,
            price_id=self.price,
            product_id=self.product,
            unit_amount=self.amount,
            created=self.sub_created,
            start_date=self.sub_created,
            billing_cycle_anchor=self.anchor,
            currency=self.currency,
            billing_cycle_anchor_config=None,
            pending_update=None,
            transfer_data=None,
        )
        item = obj["items"]["data"][0]
        item["created"] = self.sub_created
        item["price"]["currency"] = self.currency
        item["plan"]["currency"] = self.currency
        return obj

    def subscription_obj(self) -> dict[str, Any]:
        obj = self.from_base("subscription", self._subscription_base)
        start, end = self.period_bounds(self.period)
        if self.legacy:  # periods at the top level; no pauses or cancellation_details yet
            obj.update(current_period_start=start, current_period_end=end)
            obj.update(
                {
                    k: v
                    for k, v in self.sub_fields.items()
                    if k not in ("pause_collection", "cancellation_details")
                }
            )
            return obj
        item = obj["items"]["data"][0]
        item.update(current_period_start=start, current_period_end=end)
        obj.update(_clone(self.sub_fields), latest_invoice=self.latest_invoice)
        return obj

    def _invoice_base(self) -> dict[str, Any]:
        if self.legacy:
            return sp.legacy_invoice(
                "in_base", self.cus, self.sub, amount_due=self.amount, currency=self.currency
            )
        obj = sp.invoice(
            "in_base",
            self.cus,
            self.sub,
            amount_due=self.amount,
            currency=self.currency,
            customer_email=self.email,
            customer_name=self.name,
            due_date=None,
            subtotal=self.amount,
            total=self.amount,
            subtotal_excluding_tax=self.amount,
            total_excluding_tax=self.amount,
            amount_overpaid=0,
            webhooks_delivered_at=None,
        )
        line = obj["lines"]["data"][0]
        line.update(
            amount=self.amount,
            currency=self.currency,
            subtotal=self.amount,
            description=f"1 × {self.product} (at {self.amount / 100:.2f} / month)",
        )
        line["parent"] = {
            "type": "subscription_item_details",
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": self.sub,
                "subscription_item": f"si_{self.sub[-12:]}",
            },
        }
        return obj

    def invoice_obj(self, inv: _Invoice) -> dict[str, Any]:
        """The invoice as Stripe shows it now (one per-story base: only these fields vary)."""
        obj = self.from_base("invoice", self._invoice_base)
        paid = self.amount if inv.status == "paid" else 0
        obj.update(
            id=inv.id,
            number=inv.number,
            created=inv.created,
            billing_reason=inv.billing_reason,
            period_start=inv.period_start,
            period_end=inv.period_end,
            status=inv.status,
            amount_paid=paid,
            amount_remaining=self.amount - paid,
            attempt_count=inv.attempt_count,
            attempted=inv.attempt_count > 0,
            next_payment_attempt=inv.next_payment_attempt,
        )
        if self.legacy:  # no auto_advance or status_transitions in 2017; `paid`, `closed`, `charge`
            obj.update(
                paid=inv.status == "paid",
                charge=inv.charge,
                closed=inv.status not in ("draft", "open"),
            )
            return obj
        obj.update(
            auto_advance=inv.auto_advance,
            status_transitions=dict(inv.transitions),
            effective_at=inv.transitions["finalized_at"],
            hosted_invoice_url=None
            if inv.status == "draft"
            else f"https://invoice.stripe.com/i/{inv.id}",
        )
        line = obj["lines"]["data"][0]
        line.update(
            id=f"il_{inv.id[-20:]}",
            invoice=inv.id,
            period={"start": inv.period_start, "end": inv.period_end},
        )
        obj["lines"]["url"] = f"/v1/invoices/{inv.id}/lines"
        return obj

    def intent_obj(
        self, inv: _Invoice, status: str, charge: str, error: dict[str, Any] | None
    ) -> dict[str, Any]:
        assert inv.intent is not None and self.card is not None
        obj = self.from_base(
            "payment_intent",
            lambda: sp.fixture(
                "payment_intent",
                amount=self.amount,
                currency=self.currency,
                customer=self.cus,
                canceled_at=None,
                next_action=None,
                processing=None,
                automatic_payment_methods=None,
                setup_future_usage="off_session",
                payment_method_configuration_details=None,
                transfer_data=None,
                shipping=None,
            ),
        )
        obj.update(
            id=inv.intent,
            created=inv.intent_created,
            status=status,
            amount_received=self.amount if status == "succeeded" else 0,
            description="Subscription creation"
            if inv.billing_reason == "subscription_create"
            else "Subscription update",
            last_payment_error=error,
            latest_charge=charge,
            payment_method=self.card.id if status == "succeeded" else None,
            client_secret=f"{inv.intent}_secret_{inv.intent[-10:]}",
        )
        return obj

    def charge_obj(self, inv: _Invoice, charge: str, decline: str | None) -> dict[str, Any]:
        card = self.card
        assert card is not None
        if decline is None:
            obj = self.from_base(
                "charge.succeeded",
                lambda: sp.fixture(
                    "charge",
                    amount=self.amount,
                    amount_captured=self.amount,
                    captured=True,
                    paid=True,
                    status="succeeded",
                    customer=self.cus,
                    currency=self.currency,
                    source=None,
                    transfer_data=None,
                    description=None,
                ),
            )
            obj.update(
                balance_transaction=f"txn_{charge[-24:]}",
                receipt_url=f"https://pay.stripe.com/receipts/{charge}",
            )
            obj["outcome"] = {
                "advice_code": None,
                "network_advice_code": None,
                "network_decline_code": None,
                "network_status": "approved_by_network",
                "reason": None,
                "risk_level": "normal",
                "risk_score": self.rng.randint(5, 60),
                "seller_message": "Payment complete.",
                "type": "authorized",
            }
        else:
            code, advice, declines, advices = DECLINES[decline]
            message = MESSAGES.get(decline, "Your card was declined.")
            mastercard = card.brand == "mastercard"
            obj = self.from_base(
                "charge.failed",
                lambda: sp.failed_charge("ch_base", self.cus, None, amount=self.amount),
            )
            obj.update(
                failure_code=code,
                failure_message=message,
                currency=self.currency,
                balance_transaction=None,
                receipt_url=None,
            )
            obj["outcome"].update(
                reason=decline,
                advice_code=advice,
                network_decline_code=None if card.brand == "amex" else self.rng.choice(declines),
                network_advice_code=self.rng.choice(advices) if mastercard else None,
            )
        obj.update(id=charge, created=self.now)
        obj["billing_details"].update(email=self.email, name=self.name)
        obj["payment_method_details"]["card"].update(
            brand=card.brand,
            network=card.brand,
            funding=card.funding,
            last4=card.last4,
            exp_month=card.exp_month,
            exp_year=card.exp_year,
            fingerprint=card.fingerprint,
            country="US",
            wallet={"type": card.wallet, "dynamic_last4": card.last4} if card.wallet else None,
        )
        if self.legacy:  # no PaymentIntents, PaymentMethods or network codes in 2017
            for key in ("payment_method_details", "payment_method", "payment_intent"):
                obj.pop(key, None)
            for key in ("advice_code", "network_advice_code", "network_decline_code"):
                obj["outcome"].pop(key, None)
            obj.update(invoice=inv.id, source=self.card_obj())
        else:
            obj.update(payment_intent=inv.intent, payment_method=card.id)
        return obj

    # ---- life events ---------------------------------------------------------------------------

    def new_card(self) -> _Card:
        brand = self.rng.choices([b for b, _ in BRANDS], [w for _, w in BRANDS])[0]
        funding = (
            "credit"
            if brand == "amex"
            else self.rng.choice(("credit", "credit", "credit", "debit", "debit", "prepaid"))
        )
        card = _Card(
            id=self.log.new_id("card" if self.legacy else "pm"),
            brand=brand,
            funding=funding,
            last4=self.rng.choice(LAST4[brand]),
            exp_month=self.rng.randint(1, 12),
            exp_year=self.rng.randint(2026, 2031),
            fingerprint=self.log.new_id("fp", 16)[3:],
            created=self.now,
            customer=self.cus,
            wallet=None if self.legacy else self.rng.choice((None,) * 8 + WALLETS),
        )
        while card.expired_at(self.now + 31 * DAY):  # Stripe refuses to save an expired card
            card.exp_year += 1
        return card

    def attach_new_card(self) -> None:
        """The customer saves a card and makes it the default (portal, Checkout setup mode)."""
        old = self.card
        self.card = self.new_card()
        if self.legacy:
            self.emit("customer.source.created", self.card_obj())
        else:
            self.emit("payment_method.attached", self.card_obj())
        self.tick(1, 20)
        if self.legacy:
            previous = {"default_source": old.id if old else None}
        else:
            previous = {"invoice_settings": {"default_payment_method": old.id if old else None}}
        self.emit("customer.updated", self.customer_obj(), previous=previous, request=True)
        if old is not None:
            self.tick(1, 600)
            old.customer = None
            kind = "customer.source.deleted" if self.legacy else "payment_method.detached"
            self.emit(kind, self.card_obj(old), request=True)

    def card_updater(self) -> None:
        """The network's account updater renewed the card (new expiry, sometimes a new number)."""
        card = self.card
        assert card is not None and not self.legacy
        previous = {"card": {"exp_month": card.exp_month, "exp_year": card.exp_year}}
        card.exp_year += self.rng.randint(2, 4)
        card.exp_month = self.rng.randint(1, 12)
        if self.rng.random() < 0.2:  # reissued with a new number
            card.last4 = self.rng.choice(LAST4[card.brand])
            card.fingerprint = self.log.new_id("fp", 16)[3:]
        self.emit("payment_method.automatically_updated", self.card_obj(), previous=previous)

    def update_subscription(
        self, previous: dict[str, Any], *, request: bool = False, burst: bool = False
    ) -> None:
        self.emit(
            "customer.subscription.updated",
            self.subscription_obj(),
            previous=previous,
            request=request,
            burst=burst,
        )

    def period_bounds(self, period: int) -> tuple[int, int]:
        return _add_months(self.anchor, period), _add_months(self.anchor, period + 1)

    def open_invoice(self, reason: str, *, burst: bool = False) -> _Invoice:
        start, end = self.period_bounds(self.period)
        if reason == "subscription_cycle":
            start, end = self.period_bounds(self.period - 1)
        self.invoice_count += 1
        inv = _Invoice(
            id=self.log.new_id("in"),
            number=f"{self.cus[-8:].upper()}-{self.invoice_count:04d}",
            created=self.now,
            period_start=start,
            period_end=end,
            billing_reason=reason,
        )
        self.latest_invoice = inv.id
        self.emit("invoice.created", self.invoice_obj(inv), burst=burst)
        return inv

    def finalize(self, inv: _Invoice, *, burst: bool = False) -> None:
        inv.status = "open"
        inv.transitions["finalized_at"] = self.now
        if not self.legacy:  # invoice.finalized and PaymentIntents came after 2017-08-15
            inv.intent, inv.intent_created = self.log.new_id("pi"), self.now
            self.emit("invoice.finalized", self.invoice_obj(inv), burst=burst)

    def pay(self, inv: _Invoice, *, burst: bool = False) -> None:
        """A successful charge and everything Stripe says about it, in the same second."""
        charge = self.log.new_id("ch")
        inv.status, inv.attempt_count = "paid", inv.attempt_count + 1
        inv.next_payment_attempt, inv.auto_advance, inv.charge = None, False, charge
        inv.transitions["paid_at"] = self.now
        self.emit("charge.succeeded", self.charge_obj(inv, charge, None))
        if self.legacy:
            self.emit("invoice.payment_succeeded", self.invoice_obj(inv), burst=burst)
        else:
            self.emit("payment_intent.succeeded", self.intent_obj(inv, "succeeded", charge, None))
            self.emit("invoice.paid", self.invoice_obj(inv), burst=burst)
            self.emit("invoice.payment_succeeded", self.invoice_obj(inv), burst=True)
            payment = sp.fixture(
                "invoice_payment",
                id=self.log.new_id("inpay"),
                invoice=inv.id,
                amount_paid=self.amount,
                amount_requested=self.amount,
                currency=self.currency,
                created=inv.intent_created,
                is_default=True,
                livemode=False,
                status="paid",
                payment={"type": "payment_intent", "payment_intent": inv.intent},
                status_transitions={"canceled_at": None, "paid_at": self.now},
            )
            self.emit("invoice_payment.paid", payment)
        if self.sub_fields["status"] == "past_due":
            self.sub_fields["status"] = "active"
            self.update_subscription({"status": "past_due"})

    def fail(self, inv: _Invoice, decline: str, *, burst: bool = False) -> None:
        """A declined attempt: charge, PaymentIntent, then the invoice (one second, one burst)."""
        assert self.card is not None
        charge = self.log.new_id("ch")
        inv.attempt_count += 1
        inv.charge = charge
        final = inv.attempt_count >= MAX_ATTEMPTS
        inv.next_payment_attempt = (
            None
            if final
            else self.now
            + RETRY_DAYS[inv.attempt_count - 1] * DAY
            + self.rng.randint(-3 * HOUR, 3 * HOUR)
        )
        charge_obj = self.charge_obj(inv, charge, decline)
        self.emit("charge.failed", charge_obj)
        if not self.legacy:
            outcome = charge_obj["outcome"]
            error = {
                "type": "card_error",
                "code": charge_obj["failure_code"],
                "decline_code": decline,
                "message": charge_obj["failure_message"],
                "charge": charge,
                "doc_url": "https://docs.stripe.com/error-codes/"
                + charge_obj["failure_code"].replace("_", "-"),
                "advice_code": outcome["advice_code"],
                "network_advice_code": outcome["network_advice_code"],
                "network_decline_code": outcome["network_decline_code"],
                "payment_method": self.card_obj(),
            }
            self.emit(
                "payment_intent.payment_failed",
                self.intent_obj(inv, "requires_payment_method", charge, error),
                touches=(self.card.id,),
                burst=True,
            )
        invoice_obj = self.invoice_obj(inv)
        if self.automations:  # Automations users get next_payment_attempt on invoice.updated only
            invoice_obj["next_payment_attempt"] = None
        self.emit("invoice.payment_failed", invoice_obj, burst=burst)
        if decline == "authentication_required" and not self.legacy:
            self.emit("invoice.payment_action_required", invoice_obj, burst=True)
        self.emit(
            "invoice.updated",
            self.invoice_obj(inv),
            burst=True,
            previous={"attempt_count": inv.attempt_count - 1},
        )
        if self.sub_fields["status"] == "active":
            self.sub_fields["status"] = "past_due"
            self.update_subscription({"status": "active"})

    def decline_now(self) -> str | None:
        assert self.card is not None
        if self.card.expired_at(self.now):
            return "expired_card"
        if self.rng.random() >= (0.25 if self.card.funding == "prepaid" else 0.12):
            return None
        return self.rng.choices(list(DECLINES), [40, 15, 15, 0, 10, 0 if self.legacy else 20])[0]

    def collect(self, inv: _Invoice, *, burst: bool) -> None:
        """Stripe's automatic collection of a finalized invoice, then dunning until it ends."""
        decline = self.decline_now()
        if decline is None:
            self.pay(inv, burst=burst)
            return
        soft = decline in SOFT
        plan = self.rng.choices(
            ("retry", "new_card", "updater", "authenticate", "lost"),
            [
                55 if soft else 0,
                20 if decline != "authentication_required" else 0,
                15 if decline == "expired_card" and not self.legacy else 0,
                60 if decline == "authentication_required" else 0,
                25,
            ],
        )[0]
        recover_after = self.rng.randint(1, MAX_ATTEMPTS - 1)
        while True:
            self.fail(inv, decline, burst=burst)
            burst = False
            if inv.next_payment_attempt is None:
                break
            window = inv.next_payment_attempt - self.now
            acting = plan in ("new_card", "updater", "authenticate")
            if acting and inv.attempt_count == recover_after:
                self.tick(HOUR, window // 2)
                if plan == "new_card":
                    self.attach_new_card()
                    self.tick(30, 600)
                elif plan == "updater":
                    self.card_updater()
                    self.now = inv.next_payment_attempt
                else:  # the customer opens hosted_invoice_url and completes 3-D Secure
                    self.tick(10, 300)
                self.pay(inv)
                return
            self.now = inv.next_payment_attempt
            if plan == "retry" and inv.attempt_count == recover_after:
                self.pay(inv)
                return
            if decline in SOFT and self.rng.random() < 0.3:
                decline = self.rng.choice(SOFT)
        self.tick(HOUR, DAY)  # retries exhausted: Stripe's dunning end state
        inv.auto_advance = False
        if self.rng.random() < 0.6:
            inv.status = "uncollectible"
            inv.transitions["marked_uncollectible_at"] = self.now
            self.emit("invoice.marked_uncollectible", self.invoice_obj(inv))
        else:
            inv.status = "void"
            inv.transitions["voided_at"] = self.now
            self.emit("invoice.voided", self.invoice_obj(inv))
        self.tick(1, 5)
        self.end_subscription("payment_failed", feedback=None)

    def end_subscription(self, reason: str, feedback: str | None) -> None:
        self.sub_fields.update(
            status="canceled",
            ended_at=self.now,
            canceled_at=self.sub_fields["canceled_at"] or self.now,
        )
        self.sub_fields["cancellation_details"] = {
            "comment": None,
            "feedback": feedback,
            "reason": reason,
        }
        self.emit("customer.subscription.deleted", self.subscription_obj())

    # ---- the life -------------------------------------------------------------------------------

    def run(self, until: int) -> None:
        self.emit("customer.created", self.customer_obj())
        self.tick(2, 90)
        if self.legacy:  # 2017: the card is created with the customer as its default source
            self.card = self.new_card()
            self.emit("customer.source.created", self.card_obj())
            self.tick(1, 5)
            self.emit("customer.updated", self.customer_obj(), previous={"default_source": None})
        else:
            self.attach_new_card()
        self.tick(5, 600)
        self.anchor = self.sub_created = self.now
        inv = self.open_invoice("subscription_create")
        self.emit("customer.subscription.created", self.subscription_obj())
        self.finalize(inv, burst=True)
        self.pay(inv, burst=True)  # first invoice: created, finalized and paid in one second
        while self.now < until and self.month():
            pass
        if self.sub_fields["status"] == "canceled" and self.rng.random() < 0.4:
            self.tick(DAY, 30 * DAY)
            self.emit("customer.deleted", self.customer_obj(), request=True)

    def month(self) -> bool:
        """From mid-period to the end of the next renewal's dunning. False once cancelled.

        Each month: 5 % save a new card, about half of the cards about to expire are renewed by
        the card updater, 4 % ask to cancel at period end, 3 % pause collection."""
        _, end = self.period_bounds(self.period)
        self.tick(DAY, 3 * DAY)
        roll = self.rng.random()
        if roll < 0.05:
            self.attach_new_card()
        elif self.card and self.card.expired_at(end) and not self.legacy and roll < 0.55:
            self.card_updater()
        elif self.card and self.card.expired_at(end + 31 * DAY) and self.legacy and roll < 0.5:
            self.emit("customer.source.expiring", self.card_obj())
        elif roll > 0.96:
            self.request_cancel(end)
        elif roll > 0.93 and not self.legacy:
            self.pause(end)
        assert self.now < end, "a month's events ran past its renewal"
        if self.sub_fields["cancel_at_period_end"]:
            self.now = end
            self.end_subscription(
                "cancellation_requested", self.sub_fields["cancellation_details"]["feedback"]
            )
            return False
        self.renew(end)
        return self.sub_fields["status"] != "canceled"

    def request_cancel(self, end: int) -> None:
        feedback = self.rng.choice(
            ("too_expensive", "unused", "switched_service", "missing_features", "other", None)
        )
        self.sub_fields.update(cancel_at_period_end=True, cancel_at=end, canceled_at=self.now)
        self.sub_fields["cancellation_details"] = {
            "comment": None,
            "feedback": feedback,
            "reason": "cancellation_requested",
        }
        self.update_subscription(
            {"cancel_at_period_end": False, "cancel_at": None, "canceled_at": None}, request=True
        )
        if self.rng.random() < 0.25:  # changed their mind before the period ended
            self.tick(HOUR, 5 * DAY)
            self.sub_fields.update(cancel_at_period_end=False, cancel_at=None, canceled_at=None)
            self.sub_fields["cancellation_details"] = {
                "comment": None,
                "feedback": None,
                "reason": None,
            }
            self.update_subscription({"cancel_at_period_end": True}, request=True)

    def pause(self, end: int) -> None:
        behavior = self.rng.choice(("void", "keep_as_draft", "mark_uncollectible"))
        resumes_at = self.rng.choice((None, end + self.rng.randint(2, 10) * DAY))
        self.sub_fields["pause_collection"] = {"behavior": behavior, "resumes_at": resumes_at}
        self.update_subscription({"pause_collection": None}, request=True)

    def renew(self, end: int) -> None:
        if not self.legacy and self.rng.random() < 0.15:  # the preview: no id, nothing to mirror
            self.now = max(self.now, end - 3 * DAY)
            preview = _Invoice(
                id="",
                number="",
                created=self.now,
                period_start=end,
                period_end=_add_months(end, 1),
                billing_reason="upcoming",
            )
            upcoming = self.invoice_obj(preview)
            del upcoming["id"], upcoming["number"]
            self.emit("invoice.upcoming", upcoming, touches=())
        self.now = end
        self.period += 1
        inv = self.open_invoice("subscription_cycle")
        previous_latest = {"latest_invoice": None}
        self.update_subscription(previous_latest)
        paused = self.sub_fields["pause_collection"]
        self.tick(HOUR, HOUR + 120)  # renewal invoices are finalized about an hour later
        if paused:  # collection paused: Stripe voids, writes off or keeps the invoice as a draft
            behavior = paused["behavior"]
            inv.auto_advance = False
            if behavior != "keep_as_draft":
                self.finalize(inv)
                key = "voided_at" if behavior == "void" else "marked_uncollectible_at"
                inv.status = "void" if behavior == "void" else "uncollectible"
                inv.transitions[key] = self.now
                kind = "invoice.voided" if behavior == "void" else "invoice.marked_uncollectible"
                self.emit(kind, self.invoice_obj(inv), burst=True)
            if paused["resumes_at"]:
                self.now = paused["resumes_at"]
            else:
                self.tick(DAY, 10 * DAY)
            self.sub_fields["pause_collection"] = None
            self.update_subscription({"pause_collection": paused}, request=True)
            return
        same_second = self.rng.random() < 0.5
        self.finalize(inv)
        if not same_second:
            self.tick(1, 3)
        self.collect(inv, burst=same_second)


def generate_lifecycle(n_customers: int, seed: int, *, until: int = NOW) -> list[dict[str, Any]]:
    """Every event of `n_customers` lives up to `until`, in true order (by `created`, then as
    emitted). Lives still running at `until` are cut there - mid-dunning, past_due, paused,
    cancelling at period end - as an account looks on any given day."""
    log = _Log(random.Random(seed))
    for number in range(n_customers):
        _Story(log, number, legacy=log.rng.random() < 0.08).run(until)
    return log.events(until)


def deliveries(
    events: list[dict[str, Any]],
    seed: int,
    duplicate_ratio: float = 0.35,
    twin_ratio: float = 0.01,
    bodies_of_events: Sequence[bytes] | None = None,
) -> list[bytes]:
    """What the endpoint receives: every event, shuffled, `duplicate_ratio` x as many redeliveries
    (byte-identical bodies), and some changes told twice by two Event objects (same object
    state and `created`, a different event id). `bodies_of_events`: the events' bodies, when
    the caller has them already (serializing ~90,000 events again costs seconds)."""
    rng = random.Random(f"deliveries/{seed}")
    twins = []
    for evt in rng.sample(events, max(1, round(len(events) * twin_ratio))):
        twin = _clone(evt)
        twin["id"] = f"evt_{''.join(rng.choices(_ALNUM, k=24))}"
        twins.append(twin)
    if bodies_of_events is None:
        bodies_of_events = [sp.body_of(evt) for evt in events]
    bodies = [*bodies_of_events, *(sp.body_of(evt) for evt in twins)]
    redelivered = rng.choices(bodies, k=round(len(bodies) * duplicate_ratio))
    out = [*bodies, *redelivered]
    rng.shuffle(out)
    return out
