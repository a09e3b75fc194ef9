"""Reading the Stripe mirror for callers outside the engine: a customer as the JSON API shows it
(GET /api/v1/customers/<id>), and whose a subscription is."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from recovery.models import (
    Customer,
    Invoice,
    PaymentAttempt,
    PaymentMethod,
    Subscription,
)
from recovery.runtime import Runtime
from recovery.services.outreach.summary import customer_outreach

RECENT = 100  # invoices and payment attempts shown, newest first


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _card_json(pm: PaymentMethod, default_id: str | None) -> dict[str, Any]:
    return {
        "id": pm.id,
        "brand": pm.brand,
        "last4": pm.last4,
        "exp_month": pm.exp_month,
        "exp_year": pm.exp_year,
        "funding": pm.funding,
        "fingerprint": pm.fingerprint,
        "country": pm.country,
        "is_default": pm.id == default_id,
    }


def _subscription_json(s: Subscription) -> dict[str, Any]:
    return {
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


def _invoice_json(inv: Invoice) -> dict[str, Any]:
    return {
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


def _attempt_json(a: PaymentAttempt) -> dict[str, Any]:
    return {
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


def customer_detail(rt: Runtime, customer_id: str) -> dict[str, Any] | None:
    """The customer with cards, subscriptions, recent invoices and payment attempts; None when
    the mirror has no such customer."""
    with rt.db.reading() as session:
        customer = session.get(Customer, customer_id)
        if customer is None:
            return None
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
            .limit(RECENT)
        ).all()
        attempts = session.scalars(
            select(PaymentAttempt)
            .where(PaymentAttempt.customer_id == customer_id)
            .order_by(PaymentAttempt.created.desc())
            .limit(RECENT)
        ).all()
        default_id = customer.default_payment_method_id
        return {
            "id": customer.id,
            "email": customer.email,
            "name": customer.name,
            "phone": customer.phone,
            "preferred_locales": customer.preferred_locales,
            "address_country": customer.address_country,
            "deleted": customer.deleted,
            "default_payment_method": default_id,
            "cards": [_card_json(pm, default_id) for pm in cards],
            "subscriptions": [_subscription_json(s) for s in subs],
            "invoices": [_invoice_json(inv) for inv in invoices],
            "payment_attempts": [_attempt_json(a) for a in attempts],
            **customer_outreach(session, customer_id),  # contacts, offers, win-backs (issue 12)
        }


def subscription_customer(rt: Runtime, subscription_id: str) -> str | None:
    """The mirrored subscription's customer id; None when either is unknown."""
    with rt.db.reading() as session:
        sub = session.get(Subscription, subscription_id)
        return sub.customer_id if sub else None
