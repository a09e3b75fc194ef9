"""The Stripe mirror: what we know of each Stripe object, newest state wins.

Rows reference each other by Stripe id with no foreign keys: events arrive in any order, so an
invoice may be mirrored before its customer. `version_ts` / `version_tiebreak` record the state
that was applied (Stripe's event `created`, then a deterministic tie-break for events in the
same second) so an older event never overwrites newer state.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from recovery.db import Base


class Versioned:
    version_ts: Mapped[int] = mapped_column(BigInteger, default=0)
    version_tiebreak: Mapped[str] = mapped_column(String(80), default="")


class Customer(Versioned, Base):
    __tablename__ = "customers"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(255))
    phone: Mapped[str | None] = mapped_column(String(40))
    preferred_locales: Mapped[list[str]] = mapped_column(default=list)
    address_country: Mapped[str | None] = mapped_column(String(2))
    default_payment_method_id: Mapped[str | None] = mapped_column(String(255))
    default_source_id: Mapped[str | None] = mapped_column(String(255))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    deleted: Mapped[bool] = mapped_column(default=False)
    created: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_customers_email", "email"),)


class PaymentMethod(Versioned, Base):
    """A card PaymentMethod (pm_) or a legacy Card source (card_)."""

    __tablename__ = "payment_methods"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    customer_id: Mapped[str | None] = mapped_column(String(255), index=True)
    type: Mapped[str] = mapped_column(String(40), default="card")
    brand: Mapped[str | None] = mapped_column(String(40))
    last4: Mapped[str | None] = mapped_column(String(4))
    exp_month: Mapped[int | None]
    exp_year: Mapped[int | None]
    funding: Mapped[str | None] = mapped_column(String(20))
    fingerprint: Mapped[str | None] = mapped_column(String(64), index=True)
    country: Mapped[str | None] = mapped_column(String(2))
    wallet: Mapped[str | None] = mapped_column(String(40))
    created: Mapped[int | None] = mapped_column(BigInteger)

    # The overview's expiring cards: a (year, month) range scan (migration 0008).
    __table_args__ = (Index("ix_payment_methods_expiry", "exp_year", "exp_month"),)


class Subscription(Versioned, Base):
    __tablename__ = "subscriptions"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    customer_id: Mapped[str | None] = mapped_column(String(255), index=True)
    status: Mapped[str] = mapped_column(String(30))
    collection_method: Mapped[str | None] = mapped_column(String(30))
    currency: Mapped[str | None] = mapped_column(String(3))
    default_payment_method_id: Mapped[str | None] = mapped_column(String(255))
    default_source_id: Mapped[str | None] = mapped_column(String(255))
    cancel_at_period_end: Mapped[bool] = mapped_column(default=False)
    cancel_at: Mapped[datetime | None]
    canceled_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    cancellation_reason: Mapped[str | None] = mapped_column(String(40))
    cancellation_feedback: Mapped[str | None] = mapped_column(String(40))
    pause_behavior: Mapped[str | None] = mapped_column(String(30))
    pause_resumes_at: Mapped[datetime | None]
    current_period_start: Mapped[datetime | None]
    current_period_end: Mapped[datetime | None]
    trial_end: Mapped[datetime | None]
    latest_invoice_id: Mapped[str | None] = mapped_column(String(255))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    created: Mapped[int | None] = mapped_column(BigInteger)

    items: Mapped[list[SubscriptionItem]] = relationship(
        back_populates="subscription",
        cascade="all, delete-orphan",
        order_by="SubscriptionItem.id",
        lazy="selectin",
    )

    __table_args__ = (Index("ix_subscriptions_status", "status"),)


class SubscriptionItem(Base):
    """Replaced wholesale whenever its subscription's state is applied."""

    __tablename__ = "subscription_items"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # si_...
    subscription_id: Mapped[str] = mapped_column(
        ForeignKey("subscriptions.id", ondelete="CASCADE"), index=True
    )
    price_id: Mapped[str | None] = mapped_column(String(255))  # price_... or a legacy plan id
    product_id: Mapped[str | None] = mapped_column(String(255))
    unit_amount: Mapped[int | None] = mapped_column(BigInteger)
    quantity: Mapped[int] = mapped_column(default=1)
    currency: Mapped[str | None] = mapped_column(String(3))
    interval: Mapped[str | None] = mapped_column(String(10))
    interval_count: Mapped[int] = mapped_column(default=1)
    current_period_start: Mapped[datetime | None]
    current_period_end: Mapped[datetime | None]

    subscription: Mapped[Subscription] = relationship(back_populates="items")


class Invoice(Versioned, Base):
    __tablename__ = "invoices"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    customer_id: Mapped[str | None] = mapped_column(String(255), index=True)
    subscription_id: Mapped[str | None] = mapped_column(String(255), index=True)
    status: Mapped[str | None] = mapped_column(String(20))
    currency: Mapped[str] = mapped_column(String(3))
    amount_due: Mapped[int] = mapped_column(BigInteger, default=0)
    amount_paid: Mapped[int] = mapped_column(BigInteger, default=0)
    amount_remaining: Mapped[int] = mapped_column(BigInteger, default=0)
    attempt_count: Mapped[int] = mapped_column(default=0)
    attempted: Mapped[bool] = mapped_column(default=False)
    next_payment_attempt: Mapped[datetime | None]
    hosted_invoice_url: Mapped[str | None] = mapped_column(Text)
    billing_reason: Mapped[str | None] = mapped_column(String(40))
    collection_method: Mapped[str | None] = mapped_column(String(30))
    auto_advance: Mapped[bool | None]
    paid_at: Mapped[datetime | None]
    period_end: Mapped[datetime | None]
    created: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_invoices_status", "status"),)


class InvoicePayment(Base):
    """Which PaymentIntents paid (or tried to pay) which invoice.

    Since API 2025-03-31 neither charges nor PaymentIntents name their invoice; the link comes
    from `invoice.payments`, `invoice_payment.*` events or the old `invoice.payment_intent`.
    """

    __tablename__ = "invoice_payments"

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[str] = mapped_column(String(255), index=True)
    payment_intent_id: Mapped[str] = mapped_column(String(255), index=True)

    __table_args__ = (
        UniqueConstraint("invoice_id", "payment_intent_id", name="uq_invoice_payments_pair"),
    )


class PaymentAttempt(Versioned, Base):
    """One charge attempt with its decline details. Keyed by charge id (or PaymentIntent id)."""

    __tablename__ = "payment_attempts"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    payment_intent_id: Mapped[str | None] = mapped_column(String(255), index=True)
    invoice_id: Mapped[str | None] = mapped_column(String(255), index=True)
    customer_id: Mapped[str | None] = mapped_column(String(255), index=True)
    payment_method_id: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(20))  # succeeded | failed | pending
    amount: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str | None] = mapped_column(String(3))
    failure_code: Mapped[str | None] = mapped_column(String(60))
    failure_message: Mapped[str | None] = mapped_column(Text)
    decline_code: Mapped[str | None] = mapped_column(String(60))
    outcome_type: Mapped[str | None] = mapped_column(String(40))
    outcome_reason: Mapped[str | None] = mapped_column(String(60))
    network_status: Mapped[str | None] = mapped_column(String(40))
    advice_code: Mapped[str | None] = mapped_column(String(40))
    network_advice_code: Mapped[str | None] = mapped_column(String(10))
    network_decline_code: Mapped[str | None] = mapped_column(String(10))
    card_brand: Mapped[str | None] = mapped_column(String(40))
    card_last4: Mapped[str | None] = mapped_column(String(4))
    card_funding: Mapped[str | None] = mapped_column(String(20))
    card_fingerprint: Mapped[str | None] = mapped_column(String(64), index=True)
    created: Mapped[int | None] = mapped_column(BigInteger)
