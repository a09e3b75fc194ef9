"""Payment attempts -> the state we mirror, decline details included: from a charge, or from a
PaymentIntent's last error when no charge is at hand."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from recovery.domain.stripe_objects.fields import (
    Obj,
    _amount,
    _list,
    _obj,
    _require_id,
    _str,
    _time,
    normalize_brand,
    ref,
)
from recovery.domain.stripe_objects.states import CardState, card_state


@dataclass(frozen=True)
class AttemptState:
    """One payment attempt. Built from a charge or from a PaymentIntent's last error: both
    describe the same immutable attempt, so the mirror merges them field by field."""

    id: str
    payment_intent_id: str | None
    invoice_id: str | None
    customer_id: str | None
    payment_method_id: str | None
    status: str
    amount: int
    currency: str | None
    failure_code: str | None
    failure_message: str | None
    decline_code: str | None
    outcome_type: str | None
    outcome_reason: str | None
    network_status: str | None
    advice_code: str | None
    network_advice_code: str | None
    network_decline_code: str | None
    card_brand: str | None
    card_last4: str | None
    card_funding: str | None
    card_fingerprint: str | None
    created: int | None
    card: CardState | None = field(default=None, compare=False)


def _charge_card(charge: Obj) -> Obj:
    card = _obj(_obj(charge.get("payment_method_details")).get("card"))
    if card:
        return card
    source = _obj(charge.get("source"))  # old API: the card source sits on the charge
    return source if source.get("object") == "card" else {}


def attempt_from_charge(obj: Obj, *, invoice_id: str | None = None) -> AttemptState:
    cid = _require_id(obj, "charge")
    outcome = _obj(obj.get("outcome"))
    card = _charge_card(obj)
    status = _str(obj.get("status"), 20) or "pending"
    outcome_type = _str(outcome.get("type"), 40)
    reason = _str(outcome.get("reason"), 60)
    currency = _str(obj.get("currency"), 3)
    return AttemptState(
        id=cid,
        payment_intent_id=ref(obj.get("payment_intent")),
        invoice_id=ref(obj.get("invoice")) or invoice_id,
        customer_id=ref(obj.get("customer")),
        payment_method_id=ref(obj.get("payment_method")) or ref(obj.get("source")),
        status=status,
        amount=_amount(obj.get("amount"), "amount") or 0,
        currency=currency.lower() if currency else None,
        failure_code=_str(obj.get("failure_code"), 60),
        failure_message=_str(obj.get("failure_message"), 1000),
        # A charge has no decline_code field; for an issuer decline outcome.reason carries it.
        decline_code=reason if outcome_type == "issuer_declined" else None,
        outcome_type=outcome_type,
        outcome_reason=reason,
        network_status=_str(outcome.get("network_status"), 40),
        advice_code=_str(outcome.get("advice_code"), 40),
        network_advice_code=_str(outcome.get("network_advice_code"), 10),
        network_decline_code=_str(outcome.get("network_decline_code"), 10),
        card_brand=normalize_brand(card.get("brand")),
        card_last4=_str(card.get("last4"), 4),
        card_funding=_str(card.get("funding"), 20),
        card_fingerprint=_str(card.get("fingerprint"), 64),
        created=_time(obj.get("created")),
    )


def attempt_from_payment_intent(obj: Obj) -> AttemptState | None:
    """The attempt a PaymentIntent event reports, or None when it reports none."""
    pid = _require_id(obj, "payment intent")
    error = _obj(obj.get("last_payment_error"))
    status = _str(obj.get("status"), 30)
    old_charges = [c for c in _list(_obj(obj.get("charges")).get("data")) if isinstance(c, Mapping)]
    latest = obj.get("latest_charge")
    if isinstance(latest, Mapping) and latest.get("id"):
        return attempt_from_charge(latest, invoice_id=ref(obj.get("invoice")))
    charge_id = ref(error.get("charge")) or ref(latest)
    if charge_id is None and old_charges:
        return attempt_from_charge(old_charges[-1], invoice_id=ref(obj.get("invoice")))
    if status == "succeeded":
        outcome = "succeeded"
    elif error:
        outcome = "failed"
    else:
        return None  # created / processing / requires_action with no attempt to report
    pm = _obj(error.get("payment_method")) or _obj(obj.get("payment_method"))
    card = _obj(pm.get("card"))
    currency = _str(obj.get("currency"), 3)
    return AttemptState(
        id=charge_id or pid,
        payment_intent_id=pid,
        invoice_id=ref(obj.get("invoice")),
        customer_id=ref(obj.get("customer")),
        payment_method_id=ref(pm) or ref(obj.get("payment_method")),
        status=outcome,
        amount=_amount(obj.get("amount"), "amount") or 0,
        currency=currency.lower() if currency else None,
        failure_code=_str(error.get("code"), 60),
        failure_message=_str(error.get("message"), 1000),
        decline_code=_str(error.get("decline_code"), 60),
        outcome_type=None,
        outcome_reason=None,
        network_status=None,
        advice_code=_str(error.get("advice_code"), 40),
        network_advice_code=_str(error.get("network_advice_code"), 10),
        network_decline_code=_str(error.get("network_decline_code"), 10),
        card_brand=normalize_brand(card.get("brand")),
        card_last4=_str(card.get("last4"), 4),
        card_funding=_str(card.get("funding"), 20),
        card_fingerprint=_str(card.get("fingerprint"), 64),
        created=_time(obj.get("created")),
        card=card_state(pm) if pm.get("id") and card else None,
    )
