"""An in-memory `StripeGateway` for tests and the demo: Stripe's behaviour where we depend on it.

What it models: objects shaped like the pinned API version's (`tests/fixtures/stripe/`:
the invoice names its subscription under `parent.subscription_details`, periods sit on
subscription items, `discounts` instead of `coupon`); idempotent replay (same key and parameters
-> the first result again, no second effect; same key, other parameters -> `IdempotencyConflict`;
validation errors are not cached, payment failures are); newest-first pagination with
`starting_after`; the events a write causes. What it lets a test program: declines and 3-D Secure
per invoice or per card, and outages (transient errors on the next n calls).

Every call is appended to `.requests` as `(method_name, params, idempotency_key)`.
Ids are deterministic (`cus_fake000001`, ...).
"""

from __future__ import annotations

import copy
import json
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

from recovery.adapters.clock import Clock, FrozenClock
from recovery.adapters.stripe.errors import (
    AuthenticationRequired,
    CardDeclined,
    GatewayError,
    IdempotencyConflict,
    InvalidRequest,
    NotFound,
    PaymentFailed,
    RateLimited,
    Unavailable,
)
from recovery.adapters.stripe.params import (
    PAUSE_BEHAVIORS,
    PRORATION_BEHAVIORS,
    cancellation_details,
    check_choice,
    check_subscription_params,
)
from recovery.adapters.stripe.protocol import PAGE_SIZE, PINNED_API_VERSION, StripeDict
from recovery.adapters.stripe_fake_outreach import OutreachFakeMixin  # issue 12's calls

DAY = 86400
T = TypeVar("T")


class FakeRequest(NamedTuple):
    method: str
    params: dict[str, Any]
    idempotency_key: str | None


@dataclass
class _Outage:
    remaining: int
    kind: str
    skip: int
    methods: frozenset[str] | None


@dataclass(frozen=True)
class _ScriptedFailure:
    authenticate: bool = False
    code: str = "card_declined"
    decline_code: str | None = None
    advice_code: str | None = None
    network_advice_code: str | None = None
    network_decline_code: str | None = None
    brand: str | None = None


@dataclass
class _CardBehaviour:
    decline_code: str | None = None
    requires_authentication: bool = False


def _nulls(*names: str) -> dict[str, None]:
    return dict.fromkeys(names)


def _missing(kind: str, oid: str, param: str | None = None) -> GatewayError:
    message = f"No such {kind}: '{oid}'"
    if param is None:  # the object named in the URL
        return NotFound(message, code="resource_missing", http_status=404)
    return InvalidRequest(message, code="resource_missing", http_status=400, param=param)


class FakeStripeGateway(OutreachFakeMixin):
    """`StripeGateway` in memory. Seed it with `add_*` (or `put` raw Stripe objects)."""

    def __init__(
        self, *, clock: Clock | None = None, livemode: bool = False, page_size: int = PAGE_SIZE
    ) -> None:
        self.clock = clock or FrozenClock(datetime(2026, 11, 2, 9, 0, tzinfo=UTC))
        self.page_size = page_size
        self._livemode = livemode
        self.requests: list[FakeRequest] = []
        self.store: dict[str, dict[str, StripeDict]] = defaultdict(dict)  # object type -> id -> obj
        self.events: list[StripeDict] = []
        self._seq: dict[str, int] = {}
        self._counters: dict[str, int] = defaultdict(int)
        self._idempotent: dict[str, tuple[str, Any]] = {}
        self._outages: list[_Outage] = []
        self._scripted: dict[str, deque[_ScriptedFailure]] = defaultdict(deque)
        self._cards: dict[str, _CardBehaviour] = {}

    @property
    def livemode(self) -> bool:
        return self._livemode

    # ---- plumbing -------------------------------------------------------------------------------

    def _now(self) -> int:
        return int(self.clock.now().timestamp())

    def new_id(self, prefix: str) -> str:
        self._counters[prefix] += 1
        return f"{prefix}_fake{self._counters[prefix]:06d}"

    def put(self, obj: Mapping[str, Any]) -> StripeDict:
        """Store a Stripe-shaped object as is (e.g. one built from fixtures3.json)."""
        stored = copy.deepcopy(dict(obj))
        kind, oid = stored["object"], stored["id"]
        if oid not in self.store[kind]:
            self._seq[oid] = len(self._seq)
        self.store[kind][oid] = stored
        return copy.deepcopy(stored)

    def _get(self, kind: str, oid: str, param: str | None = None) -> StripeDict:
        obj = self.store[kind].get(oid)
        if obj is None:
            raise _missing(kind.replace("_", " "), oid, param)
        return obj

    def _emit(self, event_type: str, obj: StripeDict, key: str | None = None) -> None:
        self.events.append(
            {
                "id": self.new_id("evt"),
                "object": "event",
                "api_version": PINNED_API_VERSION,
                "created": self._now(),
                "data": {"object": copy.deepcopy(obj)},
                "livemode": self._livemode,
                "pending_webhooks": 0,
                "request": {"id": self.new_id("req") if key else None, "idempotency_key": key},
                "type": event_type,
            }
        )
        self._seq[self.events[-1]["id"]] = len(self._seq)

    def _gate(self, method: str, params: dict[str, Any], key: str | None) -> None:
        """Record the request, then fail it if an outage is programmed."""
        self.requests.append(FakeRequest(method, copy.deepcopy(params), key))
        for outage in self._outages:
            if outage.methods is not None and method not in outage.methods:
                continue
            if outage.skip:
                outage.skip -= 1
                return
            outage.remaining -= 1
            if outage.remaining <= 0:
                self._outages.remove(outage)
            if outage.kind == "rate_limit":
                raise RateLimited(
                    "Request rate limit exceeded.", code="rate_limit", http_status=429
                )
            raise Unavailable("An unknown error occurred", code="api_error", http_status=500)

    def _read(self, method: str, params: dict[str, Any], fetch: Callable[[], T]) -> T:
        self._gate(method, params, None)
        return copy.deepcopy(fetch())

    def _write(
        self, method: str, params: dict[str, Any], key: str, effect: Callable[[], StripeDict]
    ) -> StripeDict:
        if not key or len(key) > 255:
            raise ValueError("an idempotency key of 1-255 characters is required")
        self._gate(method, params, key)
        fingerprint = json.dumps([method, params], sort_keys=True, default=str)
        if key in self._idempotent:
            first, outcome = self._idempotent[key]
            if first != fingerprint:
                raise IdempotencyConflict(
                    "Keys for idempotent requests can only be used with the same parameters "
                    "they were first used with.",
                    code="idempotency_error",
                    http_status=400,
                )
            if isinstance(outcome, GatewayError):
                raise copy.copy(outcome)
            return copy.deepcopy(outcome)
        try:
            result = effect()
        except PaymentFailed as exc:  # an attempt happened: Stripe caches its result
            self._idempotent[key] = (fingerprint, copy.copy(exc))
            raise
        # Validation errors (InvalidRequest, NotFound) are not cached, as on Stripe.
        self._idempotent[key] = (fingerprint, copy.deepcopy(result))
        return copy.deepcopy(result)

    # ---- programming outcomes -------------------------------------------------------------------

    def outage(
        self,
        n: int,
        kind: str = "rate_limit",
        *,
        after: int = 0,
        methods: set[str] | frozenset[str] | None = None,
    ) -> None:
        """The next `n` calls (of `methods`, after letting `after` of them through) fail with a
        transient error: RateLimited (`rate_limit`) or Unavailable (`server_error`)."""
        if kind not in ("rate_limit", "server_error"):
            raise ValueError(f"unknown outage kind {kind!r}")
        self._outages.append(_Outage(n, kind, after, frozenset(methods) if methods else None))

    def fail_next_payment(
        self,
        invoice_id: str,
        decline_code: str | None = "generic_decline",
        *,
        code: str = "card_declined",
        advice_code: str | None = None,
        network_advice_code: str | None = None,
        network_decline_code: str | None = None,
        brand: str | None = None,
        times: int = 1,
    ) -> None:
        failure = _ScriptedFailure(
            False,
            code,
            decline_code,
            advice_code,
            network_advice_code,
            network_decline_code,
            brand,
        )
        self._scripted[invoice_id].extend([failure] * times)

    def require_authentication(self, invoice_id: str, *, times: int = 1) -> None:
        self._scripted[invoice_id].extend([_ScriptedFailure(authenticate=True)] * times)

    # ---- seeding --------------------------------------------------------------------------------
    # Shapes follow fixtures3.json at the pinned version; fields we never read are null/empty.

    def _base(self, kind: str, oid: str, created: int | None) -> StripeDict:
        return {
            "id": oid,
            "object": kind,
            "created": self._now() if created is None else created,
            "livemode": self._livemode,
        }

    def add_customer(
        self,
        id: str | None = None,
        *,
        email: str | None = None,
        name: str | None = None,
        phone: str | None = None,
        country: str | None = None,
        preferred_locales: list[str] | None = None,
        default_payment_method: str | None = None,
        metadata: Mapping[str, str] | None = None,
        created: int | None = None,
    ) -> StripeDict:
        cid = id or self.new_id("cus")
        address = {**_nulls("city", "line1", "line2", "postal_code", "state"), "country": country}
        settings = {**_nulls("custom_fields", "footer", "rendering_options")}
        return self.put(
            {
                **self._base("customer", cid, created),
                **_nulls("currency", "default_source", "description", "discount", "shipping"),
                **_nulls("test_clock"),
                "address": address if country else None,
                "balance": 0,
                "delinquent": False,
                "email": email,
                "invoice_prefix": cid[-8:].upper(),
                "invoice_settings": {**settings, "default_payment_method": default_payment_method},
                "metadata": dict(metadata or {}),
                "name": name,
                "next_invoice_sequence": 1,
                "phone": phone,
                "preferred_locales": list(preferred_locales or []),
                "tax_exempt": "none",
            }
        )

    def add_payment_method(
        self,
        customer_id: str | None,
        *,
        id: str | None = None,
        brand: str = "visa",
        last4: str = "4242",
        exp_month: int = 12,
        exp_year: int = 2030,
        funding: str = "credit",
        country: str = "US",
        fingerprint: str | None = None,
        declines_with: str | None = None,
        requires_authentication: bool = False,
        created: int | None = None,
    ) -> StripeDict:
        """A card PaymentMethod. `declines_with` (a decline code) makes every charge on it fail;
        `requires_authentication` makes every off-session charge need 3-D Secure."""
        pid = id or self.new_id("pm")
        self._cards[pid] = _CardBehaviour(declines_with, requires_authentication)
        checks = {**_nulls("address_line1_check", "address_postal_code_check"), "cvc_check": "pass"}
        card = {
            "brand": brand,
            "checks": checks,
            "country": country,
            "display_brand": brand,
            "exp_month": exp_month,
            "exp_year": exp_year,
            "fingerprint": fingerprint or f"fp{pid[-10:]}",
            "funding": funding,
            "generated_from": None,
            "last4": last4,
            "networks": {"available": [brand], "preferred": None},
            "regulated_status": "unregulated",
            "three_d_secure_usage": {"supported": True},
            "wallet": None,
        }
        return self.put(
            {
                **self._base("payment_method", pid, created),
                "allow_redisplay": "unspecified",
                "billing_details": _nulls("address", "email", "name", "phone", "tax_id"),
                "card": card,
                "customer": customer_id,
                "customer_account": None,
                "metadata": {},
                "type": "card",
            }
        )

    def add_price(
        self,
        id: str | None = None,
        *,
        unit_amount: int = 2000,
        currency: str = "usd",
        interval: str = "month",
        interval_count: int = 1,
        product: str | None = None,
    ) -> StripeDict:
        recurring = {"interval": interval, "interval_count": interval_count, "meter": None}
        recurring |= {"usage_type": "licensed", "trial_period_days": None}
        return self.put(
            {
                **self._base("price", id or self.new_id("price"), None),
                **_nulls("custom_unit_amount", "lookup_key", "nickname", "tiers_mode"),
                **_nulls("transform_quantity"),
                "active": True,
                "billing_scheme": "per_unit",
                "currency": currency,
                "metadata": {},
                "product": product or self.new_id("prod"),
                "recurring": recurring,
                "tax_behavior": "unspecified",
                "type": "recurring",
                "unit_amount": unit_amount,
                "unit_amount_decimal": str(unit_amount),
            }
        )

    def add_coupon(
        self, id: str | None = None, *, percent_off: float | None = 20.0, duration: str = "once"
    ) -> StripeDict:
        return self.put(
            {
                **self._base("coupon", id or self.new_id("coupon"), None),
                **_nulls("amount_off", "currency", "duration_in_months", "max_redemptions"),
                **_nulls("name", "redeem_by"),
                "duration": duration,
                "metadata": {},
                "percent_off": percent_off,
                "times_redeemed": 0,
                "valid": True,
            }
        )

    def _item(self, sub_id: str, price: StripeDict, quantity: int, start: int) -> StripeDict:
        recurring = price["recurring"]
        length = {"day": 1, "week": 7, "month": 30, "year": 365}[recurring["interval"]] * DAY
        return {
            "id": self.new_id("si"),
            "object": "subscription_item",
            "created": start,
            "current_period_end": start + length * recurring["interval_count"],
            "current_period_start": start,
            "discounts": [],
            "metadata": {},
            "price": copy.deepcopy(price),
            "quantity": quantity,
            "subscription": sub_id,
            "tax_rates": [],
        }

    def add_subscription(
        self,
        customer_id: str,
        *,
        price_id: str | None = None,
        id: str | None = None,
        status: str = "active",
        quantity: int = 1,
        default_payment_method: str | None = None,
        current_period_start: int | None = None,
        metadata: Mapping[str, str] | None = None,
        created: int | None = None,
    ) -> StripeDict:
        price = self._get("price", price_id) if price_id else self.add_price()
        sid = id or self.new_id("sub")
        start = self._now() if current_period_start is None else current_period_start
        items = [self._item(sid, price, quantity, start)]
        url = f"/v1/subscription_items?subscription={sid}"
        return self.put(
            {
                **self._base("subscription", sid, start if created is None else created),
                **_nulls("application", "application_fee_percent", "billing_cycle_anchor_config"),
                **_nulls("cancel_at", "canceled_at", "days_until_due", "default_source"),
                **_nulls("description", "ended_at", "latest_invoice", "on_behalf_of"),
                **_nulls("pause_collection", "pending_invoice_item_interval", "schedule"),
                **_nulls("pending_setup_intent", "pending_update", "test_clock", "transfer_data"),
                **_nulls("trial_end", "trial_start"),
                "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
                "billing_cycle_anchor": start,
                "cancel_at_period_end": False,
                "cancellation_details": _nulls("comment", "feedback", "reason"),
                "collection_method": "charge_automatically",
                "currency": price["currency"],
                "customer": customer_id,
                "default_payment_method": default_payment_method,
                "default_tax_rates": [],
                "discounts": [],
                "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
                "items": {"object": "list", "data": items, "has_more": False, "url": url},
                "metadata": dict(metadata or {}),
                "payment_settings": {
                    **_nulls("payment_method_options", "payment_method_types"),
                    "save_default_payment_method": "off",
                },
                "start_date": start,
                "status": status,
                "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
            }
        )

    def add_invoice(
        self,
        customer_id: str,
        *,
        subscription_id: str | None = None,
        id: str | None = None,
        amount_due: int | None = None,
        currency: str | None = None,
        status: str = "open",
        attempt_count: int = 0,
        next_payment_attempt: int | None = None,
        auto_advance: bool | None = None,
        created: int | None = None,
    ) -> StripeDict:
        """An invoice; with a subscription, a renewal for its first item's price."""
        sub = self._get("subscription", subscription_id) if subscription_id else None
        item = sub["items"]["data"][0] if sub else None
        iid = id or self.new_id("in")
        now = self._now() if created is None else created
        if amount_due is None:
            amount_due = item["price"]["unit_amount"] * item["quantity"] if item else 1000
        currency = currency or (sub["currency"] if sub else "usd")
        start, end = (
            (item["current_period_start"], item["current_period_end"]) if item else (now, now)
        )
        customer = self.store["customer"].get(customer_id, {})
        paid, draft = status == "paid", status == "draft"
        line: StripeDict = {
            **self._base("line_item", self.new_id("il"), None),
            "amount": amount_due,
            "currency": currency,
            "description": None,
            "discount_amounts": [],
            "discountable": True,
            "discounts": [],
            "invoice": iid,
            "metadata": {},
            "parent": None,
            "period": {"end": end, "start": start},
            "pretax_credit_amounts": [],
            "pricing": {"type": "price_details", "unit_amount_decimal": str(amount_due)},
            "quantity": item["quantity"] if item else 1,
            "subtotal": amount_due,
            "taxes": [],
        }
        del line["created"]
        if item:
            details: StripeDict = {"invoice_item": None, "proration": False}
            details["proration_details"] = None
            details |= {"subscription": subscription_id, "subscription_item": item["id"]}
            line["parent"] = {
                "invoice_item_details": None,
                "subscription_item_details": details,
                "type": "subscription_item_details",
            }
            line["pricing"]["price_details"] = {
                "price": item["price"]["id"],
                "product": item["price"]["product"],
            }
        parent = None
        if subscription_id:  # since 2025-03-31 the subscription is named here, not top-level
            parent = {
                "quote_details": None,
                "subscription_details": {"metadata": {}, "subscription": subscription_id},
                "type": "subscription_details",
            }
        invoice = self.put(
            {
                **self._base("invoice", iid, now),
                **_nulls("account_name", "application", "default_payment_method", "description"),
                **_nulls("default_source", "due_date", "last_finalization_error", "on_behalf_of"),
                **_nulls("receipt_number", "statement_descriptor", "test_clock"),
                "account_country": "US",
                "amount_due": amount_due,
                "amount_overpaid": 0,
                "amount_paid": amount_due if paid else 0,
                "amount_remaining": 0 if paid else amount_due,
                "amount_shipping": 0,
                "attempt_count": attempt_count,
                "attempted": attempt_count > 0 or paid,
                "auto_advance": status in ("draft", "open")
                if auto_advance is None
                else auto_advance,
                "automatic_tax": {"enabled": False, "liability": None, "status": None},
                "billing_reason": "subscription_cycle" if sub else "manual",
                "collection_method": "charge_automatically",
                "currency": currency,
                "customer": customer_id,
                "customer_email": customer.get("email"),
                "customer_name": customer.get("name"),
                "discounts": [],
                "effective_at": None if draft else now,
                "ending_balance": None if draft else 0,
                "hosted_invoice_url": f"https://invoice.stripe.com/i/acct_fake/test_{iid}",
                "invoice_pdf": f"https://pay.stripe.com/invoice/acct_fake/test_{iid}/pdf",
                "issuer": {"type": "self"},
                "lines": {
                    "object": "list",
                    "data": [line],
                    "has_more": False,
                    "url": f"/v1/invoices/{iid}/lines",
                },
                "metadata": {},
                "next_payment_attempt": next_payment_attempt,
                "number": None if draft else f"{iid[-8:].upper()}-0001",
                "parent": parent,
                "payment_settings": _nulls(
                    "default_mandate", "payment_method_options", "payment_method_types"
                ),
                "period_end": end,
                "period_start": start,
                "starting_balance": 0,
                "status": status,
                "status_transitions": {
                    "finalized_at": None if draft else now,
                    "marked_uncollectible_at": now if status == "uncollectible" else None,
                    "paid_at": now if paid else None,
                    "voided_at": now if status == "void" else None,
                },
                "subtotal": amount_due,
                "subtotal_excluding_tax": amount_due,
                "total": amount_due,
                "total_discount_amounts": [],
                "total_excluding_tax": amount_due,
                "total_pretax_credit_amounts": [],
                "total_taxes": [],
                "webhooks_delivered_at": now,
            }
        )
        if sub is not None:
            sub["latest_invoice"] = iid
        return invoice

    def add_event(
        self, event_type: str, obj: Mapping[str, Any], *, created: int | None = None
    ) -> StripeDict:
        """An event in the account's history (what `iter_events` lists)."""
        self._emit(event_type, copy.deepcopy(dict(obj)))
        if created is not None:
            self.events[-1]["created"] = created
        return copy.deepcopy(self.events[-1])

    # ---- invoices -------------------------------------------------------------------------------

    def retrieve_invoice(self, id: str) -> StripeDict:
        return self._read("retrieve_invoice", {"id": id}, lambda: self._get("invoice", id))

    def pay_invoice(
        self,
        id: str,
        *,
        idempotency_key: str,
        payment_method: str | None = None,
        off_session: bool = True,
    ) -> StripeDict:
        params = {"id": id, "payment_method": payment_method, "off_session": off_session}
        return self._write(
            "pay_invoice",
            params,
            idempotency_key,
            lambda: self._pay(id, payment_method, idempotency_key),
        )

    def _payment_method_for(self, invoice: StripeDict, explicit: str | None) -> StripeDict:
        if explicit is not None:
            pm = self._get("payment_method", explicit, "payment_method")
            if pm["customer"] != invoice["customer"]:
                raise InvalidRequest(
                    "The PaymentMethod must be attached to the invoice's customer.",
                    code="payment_method_invalid_parameter",
                    param="payment_method",
                )
            return pm
        sub_id = (invoice.get("parent") or {}).get("subscription_details", {}).get("subscription")
        sub = self.store["subscription"].get(sub_id or "")
        customer = self.store["customer"].get(invoice["customer"], {})
        # Stripe's order: the subscription's default, then the customer's invoice default.
        pm_id = (sub or {}).get("default_payment_method") or (
            customer.get("invoice_settings") or {}
        ).get("default_payment_method")
        if not pm_id:
            raise InvalidRequest(
                "This customer has no attached payment source or default payment method."
            )
        return self._get("payment_method", pm_id, "payment_method")

    def _pay(self, invoice_id: str, explicit_pm: str | None, key: str) -> StripeDict:
        invoice = self._get("invoice", invoice_id)
        if invoice["status"] == "paid":
            raise InvalidRequest("Invoice is already paid")
        if invoice["status"] not in ("draft", "open", "uncollectible"):
            raise InvalidRequest(f"You cannot pay an invoice with status {invoice['status']}.")
        pm = self._payment_method_for(invoice, explicit_pm)
        now = self._now()
        if invoice["status"] == "draft":
            invoice["status"] = "open"
            invoice["status_transitions"]["finalized_at"] = now
        script = self._scripted[invoice_id]
        scripted = script.popleft() if script else None
        card = self._cards.get(pm["id"], _CardBehaviour())
        invoice["attempt_count"] += 1
        invoice["attempted"] = True
        intent_id, charge_id = self.new_id("pi"), self.new_id("ch")
        if (scripted and scripted.authenticate) or (
            scripted is None and card.requires_authentication
        ):
            self._record_attempt(invoice, pm, intent_id, None, "requires_action", None)
            self._emit("invoice.payment_action_required", invoice, key)
            raise AuthenticationRequired(
                "This payment requires additional user action before it can be completed.",
                code="invoice_payment_intent_requires_action",
                hosted_invoice_url=invoice["hosted_invoice_url"],
                payment_intent_id=intent_id,
                payment_method_id=pm["id"],
                card_brand=pm["card"]["brand"],
            )
        decline = scripted or (
            _ScriptedFailure(decline_code=card.decline_code) if card.decline_code else None
        )
        if decline is not None:
            charge = self._record_attempt(invoice, pm, intent_id, charge_id, "failed", decline)
            self._emit("charge.failed", charge, key)
            self._emit("invoice.payment_failed", invoice, key)
            self._set_subscription_status(invoice, "past_due", key)
            raise CardDeclined(
                "Your card was declined.",
                code=decline.code,
                decline_code=decline.decline_code,
                advice_code=decline.advice_code,
                network_advice_code=decline.network_advice_code,
                network_decline_code=decline.network_decline_code,
                charge_id=charge_id,
                payment_intent_id=intent_id,
                payment_method_id=pm["id"],
                card_brand=decline.brand or pm["card"]["brand"],
            )
        charge = self._record_attempt(invoice, pm, intent_id, charge_id, "succeeded", None)
        invoice.update(
            status="paid",
            amount_paid=invoice["amount_due"],
            amount_remaining=0,
            next_payment_attempt=None,
            auto_advance=False,
        )
        invoice["status_transitions"]["paid_at"] = now
        self._emit("charge.succeeded", charge, key)
        self._emit("invoice.paid", invoice, key)
        self._emit("invoice.payment_succeeded", invoice, key)
        self._set_subscription_status(invoice, "active", key)
        return invoice

    def _record_attempt(
        self,
        invoice: StripeDict,
        pm: StripeDict,
        intent_id: str,
        charge_id: str | None,
        status: str,
        decline: _ScriptedFailure | None,
    ) -> StripeDict:
        card = pm["card"]
        brand = (decline.brand if decline else None) or card["brand"]
        now = self._now()
        charge: StripeDict = {}
        if charge_id is not None:
            charge = self.put(
                {
                    "id": charge_id,
                    "object": "charge",
                    "amount": invoice["amount_remaining"],
                    "captured": status == "succeeded",
                    "created": now,
                    "currency": invoice["currency"],
                    "customer": invoice["customer"],
                    "failure_code": decline.code if decline else None,
                    "failure_message": "Your card was declined." if decline else None,
                    "livemode": self._livemode,
                    "metadata": {},
                    "outcome": {
                        "advice_code": decline.advice_code if decline else None,
                        "network_advice_code": decline.network_advice_code if decline else None,
                        "network_decline_code": decline.network_decline_code if decline else None,
                        "network_status": "declined_by_network"
                        if decline
                        else "approved_by_network",
                        "reason": decline.decline_code if decline else None,
                        "risk_level": "normal",
                        "seller_message": "The bank did not return any further details."
                        if decline
                        else "Payment complete.",
                        "type": "issuer_declined" if decline else "authorized",
                    },
                    "paid": status == "succeeded",
                    "payment_intent": intent_id,
                    "payment_method": pm["id"],
                    "payment_method_details": {
                        "card": {
                            "brand": brand,
                            "country": card["country"],
                            "exp_month": card["exp_month"],
                            "exp_year": card["exp_year"],
                            "fingerprint": card["fingerprint"],
                            "funding": card["funding"],
                            "last4": card["last4"],
                        },
                        "type": "card",
                    },
                    "status": status,
                }
            )
        self.put(
            {
                "id": intent_id,
                "object": "payment_intent",
                "amount": invoice["amount_remaining"],
                "created": now,
                "currency": invoice["currency"],
                "customer": invoice["customer"],
                "last_payment_error": {
                    "charge": charge_id,
                    "code": decline.code,
                    "decline_code": decline.decline_code,
                    "advice_code": decline.advice_code,
                    "network_advice_code": decline.network_advice_code,
                    "network_decline_code": decline.network_decline_code,
                    "payment_method": copy.deepcopy(pm),
                    "type": "card_error",
                }
                if decline
                else None,
                "latest_charge": charge_id,
                "livemode": self._livemode,
                "metadata": {},
                "payment_method": pm["id"],
                "status": {"failed": "requires_payment_method"}.get(status, status),
            }
        )
        self.put(
            {
                "id": self.new_id("inpay"),
                "object": "invoice_payment",
                "amount_paid": invoice["amount_remaining"] if status == "succeeded" else None,
                "amount_requested": invoice["amount_remaining"],
                "created": now,
                "currency": invoice["currency"],
                "invoice": invoice["id"],
                "is_default": True,
                "livemode": self._livemode,
                "payment": {"payment_intent": intent_id, "type": "payment_intent"},
                "status": "paid" if status == "succeeded" else "open",
                "status_transitions": {
                    "canceled_at": None,
                    "paid_at": now if status == "succeeded" else None,
                },
            }
        )
        return charge

    def _set_subscription_status(self, invoice: StripeDict, status: str, key: str) -> None:
        sub_id = ((invoice.get("parent") or {}).get("subscription_details") or {}).get(
            "subscription"
        )
        sub = self.store["subscription"].get(sub_id or "")
        if sub is None or sub["status"] == status or sub["status"] == "canceled":
            return
        if status == "past_due" and sub["status"] not in ("active", "trialing"):
            return
        sub["status"] = status
        self._emit("customer.subscription.updated", sub, key)

    def update_invoice(
        self,
        id: str,
        *,
        idempotency_key: str,
        auto_advance: bool | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> StripeDict:
        if auto_advance is None and metadata is None:
            raise ValueError("update_invoice needs auto_advance or metadata")
        params = {
            "id": id,
            "auto_advance": auto_advance,
            "metadata": dict(metadata) if metadata is not None else None,
        }

        def effect() -> StripeDict:
            invoice = self._get("invoice", id)
            if auto_advance is not None:
                invoice["auto_advance"] = auto_advance
            if metadata is not None:
                invoice["metadata"].update(metadata)
            self._emit("invoice.updated", invoice, idempotency_key)
            return invoice

        return self._write("update_invoice", params, idempotency_key, effect)

    def mark_uncollectible(self, id: str, *, idempotency_key: str) -> StripeDict:
        def effect() -> StripeDict:
            invoice = self._get("invoice", id)
            if invoice["status"] != "open":
                raise InvalidRequest(
                    f"You can only mark an open invoice uncollectible, not {invoice['status']}."
                )
            invoice["status"] = "uncollectible"
            invoice["status_transitions"]["marked_uncollectible_at"] = self._now()
            invoice["next_payment_attempt"] = None
            self._emit("invoice.marked_uncollectible", invoice, idempotency_key)
            return invoice

        return self._write("mark_uncollectible", {"id": id}, idempotency_key, effect)

    # ---- customers ------------------------------------------------------------------------------

    def retrieve_customer(self, id: str) -> StripeDict:
        return self._read("retrieve_customer", {"id": id}, lambda: self._get("customer", id))

    def _attached(self, pm_id: str, customer_id: str, param: str) -> StripeDict:
        pm = self._get("payment_method", pm_id, param)
        if pm["customer"] != customer_id:
            raise InvalidRequest(
                f"The customer does not have a payment method with the ID {pm_id}. The payment "
                "method must be attached to the customer.",
                code="resource_missing",
                param=param,
            )
        return pm

    def update_customer_default_payment_method(
        self, customer_id: str, pm_id: str, *, idempotency_key: str
    ) -> StripeDict:
        def effect() -> StripeDict:
            customer = self._get("customer", customer_id)
            self._attached(pm_id, customer_id, "invoice_settings[default_payment_method]")
            customer["invoice_settings"]["default_payment_method"] = pm_id
            self._emit("customer.updated", customer, idempotency_key)
            return customer

        params = {"customer_id": customer_id, "pm_id": pm_id}
        return self._write(
            "update_customer_default_payment_method", params, idempotency_key, effect
        )

    # ---- subscriptions --------------------------------------------------------------------------

    def retrieve_subscription(self, id: str) -> StripeDict:
        return self._read(
            "retrieve_subscription", {"id": id}, lambda: self._get("subscription", id)
        )

    def _sub_write(
        self, method: str, id: str, params: dict[str, Any], key: str, changes: dict[str, Any]
    ) -> StripeDict:
        def effect() -> StripeDict:
            sub = self._get("subscription", id)
            before = copy.deepcopy(sub)
            self._apply(sub, changes)
            if sub != before:
                ended = sub["status"] == "canceled" and before["status"] != "canceled"
                kind = "deleted" if ended else "updated"
                self._emit(f"customer.subscription.{kind}", sub, key)
            return sub

        return self._write(method, {"id": id, **params}, key, effect)

    _SUPPORTED = frozenset(
        {
            "cancel_at_period_end",
            "cancellation_details",
            "default_payment_method",
            "description",
            "discounts",
            "items",
            "metadata",
            "pause_collection",
            "proration_behavior",
        }
    )

    def _apply(self, sub: StripeDict, changes: Mapping[str, Any]) -> None:
        """Apply update parameters (validated first, so a failure changes nothing)."""
        unsupported = set(changes) - self._SUPPORTED - {"_cancel_now"}
        if unsupported:
            raise NotImplementedError(f"the fake does not model {sorted(unsupported)}")
        if sub["status"] in ("canceled", "incomplete_expired") and "_cancel_now" not in changes:
            raise InvalidRequest(
                "A canceled subscription can only update its cancellation_details and metadata."
            )
        if changes.get("default_payment_method"):
            self._attached(
                changes["default_payment_method"], sub["customer"], "default_payment_method"
            )
        new_items: list[tuple[StripeDict, StripeDict, int]] = []
        for i, change in enumerate(changes.get("items") or []):
            item = next((x for x in sub["items"]["data"] if x["id"] == change.get("id")), None)
            if item is None:
                raise _missing("subscription item", str(change.get("id")), f"items[{i}][id]")
            price = self._get("price", change["price"], f"items[{i}][price]")
            new_items.append((item, price, int(change.get("quantity") or 1)))
        discounts: list[str] = []
        for i, entry in enumerate(changes.get("discounts") or []):
            coupon = self._get("coupon", entry["coupon"], f"discounts[{i}][coupon]")
            discount = self.put(
                {
                    "id": self.new_id("di"),
                    "object": "discount",
                    "checkout_session": None,
                    "customer": sub["customer"],
                    "customer_account": None,
                    "end": None,
                    "invoice": None,
                    "invoice_item": None,
                    "promotion_code": None,
                    "source": {"coupon": coupon["id"], "type": "coupon"},
                    "start": self._now(),
                    "subscription": sub["id"],
                    "subscription_item": None,
                }
            )
            discounts.append(discount["id"])
        # -- validated; now change
        for item, price, quantity in new_items:
            item["price"] = copy.deepcopy(price)
            item["quantity"] = quantity  # Stripe resets it to 1 unless given
        if "discounts" in changes:
            sub["discounts"] = discounts
        if "metadata" in changes:
            sub["metadata"].update(changes["metadata"] or {})
        if "description" in changes:
            sub["description"] = changes["description"] or None
        if "default_payment_method" in changes:
            sub["default_payment_method"] = changes["default_payment_method"] or None
        if "pause_collection" in changes:
            pause = changes["pause_collection"]
            sub["pause_collection"] = (
                {"behavior": pause["behavior"], "resumes_at": pause.get("resumes_at")}
                if pause
                else None
            )
        details = changes.get("cancellation_details") or {}
        for name in ("feedback", "comment"):
            if name in details:
                sub["cancellation_details"][name] = details[name]
        period_end = min(i["current_period_end"] for i in sub["items"]["data"])
        if "cancel_at_period_end" in changes:
            at_end = bool(changes["cancel_at_period_end"])
            sub["cancel_at_period_end"] = at_end
            sub["cancel_at"] = period_end if at_end else None
            sub["canceled_at"] = self._now() if at_end else None
            sub["cancellation_details"]["reason"] = "cancellation_requested" if at_end else None
        if changes.get("_cancel_now") and sub["status"] != "canceled":
            now = self._now()
            sub.update(status="canceled", canceled_at=now, ended_at=now, cancel_at=None)
            sub["cancellation_details"]["reason"] = "cancellation_requested"
            # Cancelling turns off collection on the subscription's open and draft invoices.
            # https://docs.stripe.com/billing/subscriptions/cancel
            for invoice in self.store["invoice"].values():
                parent = (invoice.get("parent") or {}).get("subscription_details") or {}
                if parent.get("subscription") == sub["id"] and invoice["status"] in (
                    "draft",
                    "open",
                ):
                    invoice["auto_advance"] = False

    def update_subscription(self, id: str, *, idempotency_key: str, **params: Any) -> StripeDict:
        check_subscription_params(params)
        if "proration_behavior" in params:
            check_choice(params["proration_behavior"], PRORATION_BEHAVIORS, "proration_behavior")
        return self._sub_write("update_subscription", id, params, idempotency_key, params)

    def pause_subscription(
        self, id: str, *, behavior: str, resumes_at: int | None = None, idempotency_key: str
    ) -> StripeDict:
        check_choice(behavior, PAUSE_BEHAVIORS, "pause_collection[behavior]")
        pause = {"behavior": behavior, "resumes_at": resumes_at}
        return self._sub_write(
            "pause_subscription", id, dict(pause), idempotency_key, {"pause_collection": pause}
        )

    def resume_subscription(self, id: str, *, idempotency_key: str) -> StripeDict:
        return self._sub_write(
            "resume_subscription", id, {}, idempotency_key, {"pause_collection": ""}
        )

    def change_subscription_price(
        self,
        id: str,
        *,
        item_id: str,
        price_id: str,
        proration_behavior: str,
        idempotency_key: str,
        quantity: int | None = None,
    ) -> StripeDict:
        check_choice(proration_behavior, PRORATION_BEHAVIORS, "proration_behavior")
        params = {
            "item_id": item_id,
            "price_id": price_id,
            "proration_behavior": proration_behavior,
            "quantity": quantity,
        }
        item = {"id": item_id, "price": price_id, "quantity": quantity}
        changes = {"items": [item], "proration_behavior": proration_behavior}
        return self._sub_write("change_subscription_price", id, params, idempotency_key, changes)

    def set_subscription_default_payment_method(
        self, id: str, pm_id: str, *, idempotency_key: str
    ) -> StripeDict:
        return self._sub_write(
            "set_subscription_default_payment_method",
            id,
            {"pm_id": pm_id},
            idempotency_key,
            {"default_payment_method": pm_id},
        )

    def cancel_subscription(
        self,
        id: str,
        *,
        at_period_end: bool,
        feedback: str | None = None,
        comment: str | None = None,
        idempotency_key: str,
    ) -> StripeDict:
        details = cancellation_details(feedback, comment)
        params = {"at_period_end": at_period_end, "feedback": feedback, "comment": comment}
        changes: dict[str, Any] = {"cancellation_details": details} if details else {}
        if at_period_end:
            changes["cancel_at_period_end"] = True
        else:
            changes["_cancel_now"] = True
        return self._sub_write("cancel_subscription", id, params, idempotency_key, changes)

    def apply_subscription_coupon(
        self, id: str, coupon_id: str, *, idempotency_key: str
    ) -> StripeDict:
        return self._sub_write(
            "apply_subscription_coupon",
            id,
            {"coupon_id": coupon_id},
            idempotency_key,
            {"discounts": [{"coupon": coupon_id}]},
        )

    # ---- checkout, setup intents, payment methods -----------------------------------------------

    def create_checkout_setup_session(
        self,
        *,
        customer_id: str,
        success_url: str,
        cancel_url: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
        locale: str | None = None,
    ) -> StripeDict:
        params = {
            "customer_id": customer_id,
            "success_url": success_url,
            "cancel_url": cancel_url,
            "metadata": dict(metadata),
            "locale": locale,
        }

        def effect() -> StripeDict:
            self._get("customer", customer_id, "customer")
            now = self._now()
            intent = self.put(
                {
                    "id": self.new_id("seti"),
                    "object": "setup_intent",
                    "application": None,
                    "automatic_payment_methods": None,
                    "cancellation_reason": None,
                    "client_secret": None,
                    "created": now,
                    "customer": customer_id,
                    "description": None,
                    "flow_directions": None,
                    "last_setup_error": None,
                    "latest_attempt": None,
                    "livemode": self._livemode,
                    "mandate": None,
                    "metadata": dict(metadata),
                    "next_action": None,
                    "on_behalf_of": None,
                    "payment_method": None,
                    "payment_method_options": {"card": {"request_three_d_secure": "automatic"}},
                    "payment_method_types": ["card"],
                    "single_use_mandate": None,
                    "status": "requires_payment_method",
                    "usage": "off_session",
                }
            )
            self.store["setup_intent"][intent["id"]]["client_secret"] = f"{intent['id']}_secret"
            sid = self.new_id("cs_test")
            return self.put(
                {
                    "id": sid,
                    "object": "checkout.session",
                    "cancel_url": cancel_url,
                    "client_reference_id": None,
                    "created": now,
                    "currency": None,
                    "customer": customer_id,
                    "customer_email": None,
                    "expires_at": now + 86400,
                    "invoice": None,
                    "livemode": self._livemode,
                    "locale": locale,
                    "metadata": dict(metadata),
                    "mode": "setup",
                    "payment_intent": None,
                    "payment_method_types": ["card"],
                    "payment_status": "no_payment_required",
                    "setup_intent": intent["id"],
                    "status": "open",
                    "subscription": None,
                    "success_url": success_url,
                    "url": f"https://checkout.stripe.com/c/pay/{sid}",
                }
            )

        return self._write("create_checkout_setup_session", params, idempotency_key, effect)

    def complete_checkout_session(self, id: str, **card: Any) -> StripeDict:
        """Play the customer: save a new card (see `add_payment_method`), complete the session."""
        session = self._get("checkout.session", id)
        pm = self.add_payment_method(session["customer"], **card)
        intent = self.store["setup_intent"][session["setup_intent"]]
        intent.update(status="succeeded", payment_method=pm["id"])
        session.update(status="complete")
        self._emit("payment_method.attached", pm)
        self._emit("setup_intent.succeeded", {**intent, "payment_method": pm})
        self._emit("checkout.session.completed", session)
        return copy.deepcopy(session)

    def _expanded_setup_intent(self, id: str) -> StripeDict:
        intent = copy.deepcopy(self._get("setup_intent", id))
        if intent["payment_method"]:
            intent["payment_method"] = self._get("payment_method", intent["payment_method"])
        return intent

    def retrieve_checkout_session(self, id: str) -> StripeDict:
        def fetch() -> StripeDict:
            session = copy.deepcopy(self._get("checkout.session", id))
            if session["setup_intent"]:
                session["setup_intent"] = self._expanded_setup_intent(session["setup_intent"])
            return session

        return self._read("retrieve_checkout_session", {"id": id}, fetch)

    def retrieve_setup_intent(self, id: str) -> StripeDict:
        return self._read(
            "retrieve_setup_intent", {"id": id}, lambda: self._expanded_setup_intent(id)
        )

    def retrieve_payment_method(self, id: str) -> StripeDict:
        return self._read(
            "retrieve_payment_method", {"id": id}, lambda: self._get("payment_method", id)
        )

    def list_customer_payment_methods(self, customer_id: str) -> list[StripeDict]:
        def fetch() -> list[StripeDict]:
            self._get("customer", customer_id)
            return self._newest_first("payment_method", lambda pm: pm["customer"] == customer_id)

        return self._read("list_customer_payment_methods", {"customer_id": customer_id}, fetch)

    # ---- paginated reads ------------------------------------------------------------------------

    def _newest_first(
        self, kind: str, keep: Callable[[StripeDict], bool] = lambda obj: True
    ) -> list[StripeDict]:
        objects = self.events if kind == "event" else list(self.store[kind].values())
        ordered = sorted(objects, key=lambda o: (o["created"], self._seq[o["id"]]), reverse=True)
        return [o for o in ordered if keep(o)]

    def _pages(
        self,
        method: str,
        kind: str,
        params: dict[str, Any],
        keep: Callable[[StripeDict], bool],
        starting_after: str | None,
    ) -> Iterator[StripeDict]:
        cursor = starting_after
        while True:
            self._gate(method, {**params, "limit": self.page_size, "starting_after": cursor}, None)
            everything = self._newest_first(kind)
            position = 0
            if cursor is not None:
                # A cursor is a position in the full list, valid even if the object no longer
                # matches the filter (an invoice paid since the last page).
                ids = [o["id"] for o in everything]
                if cursor not in ids:
                    raise _missing(kind, cursor, "starting_after")
                position = ids.index(cursor) + 1
            rest = [o for o in everything[position:] if keep(o)]
            page = copy.deepcopy(rest[: self.page_size])
            yield from page
            if len(rest) <= self.page_size:
                return
            cursor = page[-1]["id"]

    def iter_customers(self, starting_after: str | None = None) -> Iterator[StripeDict]:
        return self._pages("iter_customers", "customer", {}, lambda o: True, starting_after)

    def iter_subscriptions(
        self, starting_after: str | None = None, status: str = "all"
    ) -> Iterator[StripeDict]:
        def keep(sub: StripeDict) -> bool:
            if status == "all":
                return True
            return bool(sub["status"] == status)

        params = {"status": status}
        return self._pages("iter_subscriptions", "subscription", params, keep, starting_after)

    def iter_invoices(self, status: str, starting_after: str | None = None) -> Iterator[StripeDict]:
        def keep(invoice: StripeDict) -> bool:
            return bool(invoice["status"] == status)

        return self._pages("iter_invoices", "invoice", {"status": status}, keep, starting_after)

    def iter_events(
        self, created_gte: int, starting_after: str | None = None
    ) -> Iterator[StripeDict]:
        def keep(event: StripeDict) -> bool:
            return bool(event["created"] >= created_gte)

        params = {"created_gte": created_gte}
        return self._pages("iter_events", "event", params, keep, starting_after)


__all__ = ["FakeRequest", "FakeStripeGateway"]
