"""The hosted cancel flow: one row per session, one row per accepted offer."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from recovery.db import Base


class Outcome(StrEnum):
    SAVED_BY_PAUSE = "saved_by_pause"
    SAVED_BY_DOWNGRADE = "saved_by_downgrade"
    SAVED_BY_LONGER_TERM = "saved_by_longer_term"
    SAVED_BY_DISCOUNT = "saved_by_discount"
    CANCELLED = "cancelled"
    ABANDONED = "abandoned"  # left without deciding ("keep my subscription", or expired)


class StripeStatus(StrEnum):
    NONE = "none"  # nothing to apply (no decision, or abandoned)
    PENDING = "pending"  # decided; Stripe not reached yet - the worker applies it
    APPLIED = "applied"
    FAILED = "failed"  # Stripe refused for good (e.g. the subscription no longer exists)


class CancelSession(Base):
    __tablename__ = "cancel_sessions"

    # Public reference (API, webhooks, idempotency keys); knowing it grants nothing.
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # The subscriber's capability is the token in the URL (random for API sessions, derived from
    # the signature with our secret key for signed links, so one link opens one session); only
    # its SHA-256 is stored.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    source: Mapped[str] = mapped_column(String(10))  # "api" | "link"
    customer_id: Mapped[str] = mapped_column(String(255), index=True)
    subscription_id: Mapped[str] = mapped_column(String(255), index=True)
    return_url: Mapped[str] = mapped_column(Text)
    locale: Mapped[str | None] = mapped_column(String(20))  # as the business asked
    display_locale: Mapped[str | None] = mapped_column(String(20))  # what the pages used
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    variant: Mapped[str] = mapped_column(String(40))
    # timestamps per step
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    survey_at: Mapped[datetime | None]
    offer_shown_at: Mapped[datetime | None]
    decided_at: Mapped[datetime | None]
    applied_at: Mapped[datetime | None]
    # answers and decision
    reason: Mapped[str | None] = mapped_column(String(40))
    reason_text: Mapped[str | None] = mapped_column(Text)
    offer_decided: Mapped[bool] = mapped_column(default=False)  # the one offer is fixed
    offer_shown: Mapped[str | None] = mapped_column(String(20))
    offer_terms: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    outcome: Mapped[str | None] = mapped_column(String(30))
    cancel_at_period_end: Mapped[bool | None]
    ends_at: Mapped[datetime | None]  # cancellation: access ends; pause: billing resumes
    # A cancellation's `domain.cancel_terms.CancelPlan`: how it ends, what became of an unpaid
    # invoice (which the pages and the confirmation email state).
    cancel_plan: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    # monthly revenue, minor units
    currency: Mapped[str] = mapped_column(String(3))
    mrr_before: Mapped[int] = mapped_column(BigInteger)
    mrr_after: Mapped[int | None] = mapped_column(BigInteger)
    stripe_status: Mapped[str] = mapped_column(String(20), default=StripeStatus.NONE)
    stripe_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_cancel_sessions_created_at", "created_at"),
        Index("ix_cancel_sessions_outcome", "outcome"),
    )


class OfferAcceptance(Base):
    """An accepted offer: one per session at most (unique), the customer's offer history."""

    __tablename__ = "cancel_offer_acceptances"

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[str] = mapped_column(String(40), unique=True)
    customer_id: Mapped[str] = mapped_column(String(255), index=True)
    subscription_id: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(20))
    months: Mapped[int | None]  # pause length
    terms: Mapped[dict[str, Any]] = mapped_column(default=dict)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    accepted_at: Mapped[datetime]
    ends_at: Mapped[datetime | None]
    applied_at: Mapped[datetime | None]
