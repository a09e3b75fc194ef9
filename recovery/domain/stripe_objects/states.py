"""Customers, cards, subscriptions (with their items) and invoices -> the states we mirror."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from recovery.domain.stripe_objects.fields import (
    MappingError,
    Obj,
    _amount,
    _bool,
    _bounded,
    _list,
    _metadata,
    _obj,
    _require_id,
    _str,
    _time,
    normalize_brand,
    ref,
)


@dataclass(frozen=True)
class CustomerState:
    id: str
    email: str | None
    name: str | None
    phone: str | None
    preferred_locales: tuple[str, ...]
    address_country: str | None
    default_payment_method_id: str | None
    default_source_id: str | None
    metadata: Mapping[str, str]
    deleted: bool
    created: int | None


@dataclass(frozen=True)
class CardState:
    id: str
    customer_id: str | None
    type: str
    brand: str | None
    last4: str | None
    exp_month: int | None
    exp_year: int | None
    funding: str | None
    fingerprint: str | None
    country: str | None
    wallet: str | None
    created: int | None


@dataclass(frozen=True)
class ItemState:
    id: str
    price_id: str | None
    product_id: str | None
    unit_amount: int | None
    quantity: int
    currency: str | None
    interval: str | None
    interval_count: int
    current_period_start: int | None
    current_period_end: int | None


@dataclass(frozen=True)
class SubscriptionState:
    id: str
    customer_id: str | None
    status: str
    collection_method: str | None
    currency: str | None
    default_payment_method_id: str | None
    default_source_id: str | None
    cancel_at_period_end: bool
    cancel_at: int | None
    canceled_at: int | None
    ended_at: int | None
    cancellation_reason: str | None
    cancellation_feedback: str | None
    pause_behavior: str | None
    pause_resumes_at: int | None
    current_period_start: int | None
    current_period_end: int | None
    trial_end: int | None
    latest_invoice_id: str | None
    metadata: Mapping[str, str]
    created: int | None
    items: tuple[ItemState, ...]


@dataclass(frozen=True)
class InvoiceState:
    id: str
    customer_id: str | None
    subscription_id: str | None
    status: str | None
    currency: str
    amount_due: int
    amount_paid: int
    amount_remaining: int
    attempt_count: int
    attempted: bool
    next_payment_attempt: int | None
    hosted_invoice_url: str | None
    billing_reason: str | None
    collection_method: str | None
    auto_advance: bool | None
    paid_at: int | None
    period_end: int | None
    created: int | None
    payment_intent_ids: tuple[str, ...] = ()


def customer_state(obj: Obj, *, deleted: bool = False) -> CustomerState:
    cid = _require_id(obj, "customer")
    locales = obj.get("preferred_locales") or []
    country = _str(_obj(obj.get("address")).get("country"), 2)
    return CustomerState(
        id=cid,
        email=_str(obj.get("email"), 320),
        name=_str(obj.get("name")),
        phone=_str(obj.get("phone"), 40),
        preferred_locales=tuple(str(x)[:20] for x in locales if isinstance(x, str))
        if isinstance(locales, list)
        else (),
        address_country=country.upper() if country else None,
        default_payment_method_id=ref(
            _obj(obj.get("invoice_settings")).get("default_payment_method")
        ),
        default_source_id=ref(obj.get("default_source")),
        metadata=_metadata(obj.get("metadata")),
        deleted=deleted or _bool(obj.get("deleted")),
        created=_time(obj.get("created")),
    )


def card_state(obj: Obj) -> CardState:
    """A PaymentMethod (object=payment_method) or a legacy Card/source (object=card)."""
    pid = _require_id(obj, "payment method")
    if obj.get("object") == "card":  # legacy Card: the fields sit at the top level
        card: Obj = obj
        kind = "card"
    else:
        card = _obj(obj.get("card"))
        kind = _str(obj.get("type"), 40) or "card"
    country = _str(card.get("country"), 2)
    return CardState(
        id=pid,
        customer_id=ref(obj.get("customer")),
        type=kind,
        brand=normalize_brand(card.get("brand")),
        last4=_str(card.get("last4"), 4),
        exp_month=_bounded(card.get("exp_month"), "exp_month"),
        exp_year=_bounded(card.get("exp_year"), "exp_year"),
        funding=_str(card.get("funding"), 20),
        fingerprint=_str(card.get("fingerprint"), 64),
        country=country.upper() if country else None,
        wallet=_str(_obj(card.get("wallet")).get("type"), 40),
        created=_time(obj.get("created")),
    )


def _item_state(obj: Obj) -> ItemState | None:
    iid = ref(obj)
    if iid is None:
        return None
    price = _obj(obj.get("price")) or _obj(obj.get("plan"))
    recurring = _obj(price.get("recurring"))
    # Prices keep the amount in unit_amount and the cadence in `recurring`; legacy plans keep
    # them at the top level as `amount`, `interval`, `interval_count`.
    amount = _amount(price.get("unit_amount"), "unit_amount")
    if amount is None:
        amount = _amount(price.get("amount"), "amount")
    interval = _str(recurring.get("interval") or price.get("interval"), 10)
    count = (
        _bounded(recurring.get("interval_count") or price.get("interval_count"), "interval_count")
        or 1
    )
    quantity = _bounded(obj.get("quantity"), "quantity")
    currency = _str(price.get("currency"), 3)
    return ItemState(
        id=iid,
        price_id=ref(price),
        product_id=ref(price.get("product")),
        unit_amount=amount,
        quantity=1 if quantity is None else quantity,
        currency=currency.lower() if currency else None,
        interval=interval,
        interval_count=count,
        current_period_start=_time(obj.get("current_period_start")),
        current_period_end=_time(obj.get("current_period_end")),
    )


def subscription_state(obj: Obj) -> SubscriptionState:
    sid = _require_id(obj, "subscription")
    raw_items = _list(_obj(obj.get("items")).get("data"))
    items = tuple(
        item
        for item in (_item_state(_obj(x)) for x in raw_items if isinstance(x, Mapping))
        if item is not None
    )
    # Since 2025-03-31 the period lives on each item; before, on the subscription.
    period_end = _time(obj.get("current_period_end"))
    period_start = _time(obj.get("current_period_start"))
    item_ends = [i.current_period_end for i in items if i.current_period_end is not None]
    item_starts = [i.current_period_start for i in items if i.current_period_start is not None]
    if period_end is None and item_ends:
        period_end = min(item_ends)
    if period_start is None and item_starts:
        period_start = min(item_starts)
    pause = _obj(obj.get("pause_collection"))
    details = _obj(obj.get("cancellation_details"))
    status = _str(obj.get("status"), 30)
    if status is None:
        raise MappingError("subscription object has no status")
    currency = _str(obj.get("currency"), 3)
    return SubscriptionState(
        id=sid,
        customer_id=ref(obj.get("customer")),
        status=status,
        collection_method=_str(obj.get("collection_method"), 30),
        currency=currency.lower() if currency else None,
        default_payment_method_id=ref(obj.get("default_payment_method")),
        default_source_id=ref(obj.get("default_source")),
        cancel_at_period_end=_bool(obj.get("cancel_at_period_end")),
        cancel_at=_time(obj.get("cancel_at")),
        canceled_at=_time(obj.get("canceled_at")),
        ended_at=_time(obj.get("ended_at")),
        cancellation_reason=_str(details.get("reason"), 40),
        cancellation_feedback=_str(details.get("feedback"), 40),
        pause_behavior=_str(pause.get("behavior"), 30),
        pause_resumes_at=_time(pause.get("resumes_at")),
        current_period_start=period_start,
        current_period_end=period_end,
        trial_end=_time(obj.get("trial_end")),
        latest_invoice_id=ref(obj.get("latest_invoice")),
        metadata=_metadata(obj.get("metadata")),
        created=_time(obj.get("created")),
        items=items,
    )


def invoice_subscription_id(obj: Obj) -> str | None:
    parent = _obj(obj.get("parent"))
    new = ref(_obj(parent.get("subscription_details")).get("subscription"))
    return new or ref(obj.get("subscription"))


def invoice_state(obj: Obj) -> InvoiceState:
    iid = _require_id(obj, "invoice")
    currency = _str(obj.get("currency"), 3)
    if currency is None:
        raise MappingError("invoice object has no currency")
    intents: list[str] = []
    old_intent = ref(obj.get("payment_intent"))
    if old_intent:
        intents.append(old_intent)
    for payment in _list(_obj(obj.get("payments")).get("data")):
        pi = ref(_obj(_obj(payment).get("payment")).get("payment_intent"))
        if pi and pi not in intents:
            intents.append(pi)
    transitions = _obj(obj.get("status_transitions"))
    auto_advance = obj.get("auto_advance")
    amount_due = _amount(obj.get("amount_due"), "amount_due") or 0
    amount_paid = _amount(obj.get("amount_paid"), "amount_paid") or 0
    remaining = _amount(obj.get("amount_remaining"), "amount_remaining")
    return InvoiceState(
        id=iid,
        customer_id=ref(obj.get("customer")),
        subscription_id=invoice_subscription_id(obj),
        status=_str(obj.get("status"), 20),
        currency=currency.lower(),
        amount_due=amount_due,
        amount_paid=amount_paid,
        amount_remaining=max(amount_due - amount_paid, 0) if remaining is None else remaining,
        attempt_count=_bounded(obj.get("attempt_count"), "attempt_count") or 0,
        attempted=_bool(obj.get("attempted")),
        next_payment_attempt=_time(obj.get("next_payment_attempt")),
        hosted_invoice_url=_str(obj.get("hosted_invoice_url"), 2000),
        billing_reason=_str(obj.get("billing_reason"), 40),
        collection_method=_str(obj.get("collection_method"), 30),
        auto_advance=auto_advance if isinstance(auto_advance, bool) else None,
        paid_at=_time(transitions.get("paid_at")),
        period_end=_time(obj.get("period_end")),
        created=_time(obj.get("created")),
        payment_intent_ids=tuple(intents),
    )
