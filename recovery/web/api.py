"""The JSON API under /api/v1, for the business's own systems. Bearer keys only."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import and_, or_, select

from recovery.models import (
    Customer,
    EventStatus,
    Invoice,
    PaymentAttempt,
    PaymentMethod,
    StripeEvent,
    Subscription,
)
from recovery.web import runtime
from recovery.web.errors import ApiError

bp = Blueprint("api", __name__, url_prefix="/api/v1")
F = TypeVar("F", bound=Callable[..., Any])


@bp.before_request
def require_api_key() -> None:
    keys = runtime().settings.api_keys
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <API key>")
    # compare with every key, without stopping early
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(token.encode(), key.encode())
    if not ok:
        raise ApiError(401, "unauthorized", "unknown API key")


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ApiError(400, "invalid_parameter", f"{name} must be an integer from {low} to {high}")
    return int(raw)


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


def _event_json(e: StripeEvent) -> dict[str, Any]:
    return {
        "id": e.id,
        "type": e.type,
        "created": e.created,
        "object_id": e.object_id,
        "status": e.status,
        "attempts": e.attempts,
        "received_at": _iso(e.received_at),
        "processed_at": _iso(e.processed_at),
        "next_attempt_at": _iso(e.next_attempt_at) if e.status == EventStatus.PENDING else None,
        "last_error": e.last_error,
    }


def with_json(fn: F) -> F:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Response:
        return jsonify(fn(*args, **kwargs))

    return cast(F, wrapper)


@bp.get("/events")
@with_json
def list_events() -> dict[str, Any]:
    status = request.args.get("status")
    if status is not None and status not in {s.value for s in EventStatus}:
        raise ApiError(400, "invalid_parameter", "status must be processed, failed or pending")
    limit = _int_arg("limit", 100, 1, 500)
    after = request.args.get("starting_after")
    rt = runtime()
    with rt.db.reading() as session:
        query = select(StripeEvent).order_by(StripeEvent.received_at.desc(), StripeEvent.id.desc())
        if status:
            query = query.where(StripeEvent.status == status)
        if after:
            anchor = session.get(StripeEvent, after)
            if anchor is None:
                raise ApiError(400, "invalid_parameter", "starting_after is not a known event id")
            query = query.where(
                or_(
                    StripeEvent.received_at < anchor.received_at,
                    and_(StripeEvent.received_at == anchor.received_at, StripeEvent.id < anchor.id),
                )
            )
        rows = session.scalars(query.limit(limit + 1)).all()
        return {
            "data": [_event_json(e) for e in rows[:limit]],
            "has_more": len(rows) > limit,
        }


def _card_json(pm: PaymentMethod) -> dict[str, Any]:
    return {
        "id": pm.id,
        "brand": pm.brand,
        "last4": pm.last4,
        "exp_month": pm.exp_month,
        "exp_year": pm.exp_year,
        "funding": pm.funding,
        "fingerprint": pm.fingerprint,
        "country": pm.country,
    }


@bp.get("/customers/<customer_id>")
@with_json
def get_customer(customer_id: str) -> dict[str, Any]:
    rt = runtime()
    with rt.db.reading() as session:
        customer = session.get(Customer, customer_id)
        if customer is None:
            raise ApiError(404, "not_found", f"no customer {customer_id} in the mirror")
        cards = session.scalars(
            select(PaymentMethod).where(PaymentMethod.customer_id == customer_id)
        ).all()
        subs = session.scalars(
            select(Subscription).where(Subscription.customer_id == customer_id)
        ).all()
        invoices = session.scalars(
            select(Invoice)
            .where(Invoice.customer_id == customer_id)
            .order_by(Invoice.created.desc())
            .limit(100)
        ).all()
        attempts = session.scalars(
            select(PaymentAttempt)
            .where(PaymentAttempt.customer_id == customer_id)
            .order_by(PaymentAttempt.created.desc())
            .limit(100)
        ).all()
        return {
            "id": customer.id,
            "email": customer.email,
            "name": customer.name,
            "phone": customer.phone,
            "preferred_locales": customer.preferred_locales,
            "address_country": customer.address_country,
            "deleted": customer.deleted,
            "default_payment_method": customer.default_payment_method_id,
            "cards": [
                {**_card_json(pm), "is_default": pm.id == customer.default_payment_method_id}
                for pm in cards
            ],
            "subscriptions": [
                {
                    "id": s.id,
                    "status": s.status,
                    "default_payment_method": s.default_payment_method_id,
                    "cancel_at_period_end": s.cancel_at_period_end,
                    "current_period_end": _iso(s.current_period_end),
                    "pause_collection": None
                    if s.pause_behavior is None
                    else {"behavior": s.pause_behavior, "resumes_at": _iso(s.pause_resumes_at)},
                    "items": [
                        {
                            "id": i.id,
                            "price": i.price_id,
                            "product": i.product_id,
                            "unit_amount": i.unit_amount,
                            "quantity": i.quantity,
                            "currency": i.currency,
                            "interval": i.interval,
                            "interval_count": i.interval_count,
                        }
                        for i in s.items
                    ],
                }
                for s in subs
            ],
            "invoices": [
                {
                    "id": inv.id,
                    "status": inv.status,
                    "subscription": inv.subscription_id,
                    "currency": inv.currency,
                    "amount_due": inv.amount_due,
                    "amount_remaining": inv.amount_remaining,
                    "attempt_count": inv.attempt_count,
                    "next_payment_attempt": _iso(inv.next_payment_attempt),
                    "hosted_invoice_url": inv.hosted_invoice_url,
                    "billing_reason": inv.billing_reason,
                }
                for inv in invoices
            ],
            "payment_attempts": [
                {
                    "id": a.id,
                    "status": a.status,
                    "invoice": a.invoice_id,
                    "amount": a.amount,
                    "currency": a.currency,
                    "failure_code": a.failure_code,
                    "decline_code": a.decline_code,
                    "outcome": {
                        "type": a.outcome_type,
                        "reason": a.outcome_reason,
                        "network_status": a.network_status,
                        "advice_code": a.advice_code,
                    },
                    "network_advice_code": a.network_advice_code,
                    "network_decline_code": a.network_decline_code,
                    "card_brand": a.card_brand,
                    "card_last4": a.card_last4,
                }
                for a in attempts
            ],
        }
