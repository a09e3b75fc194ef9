"""Recovery cases (one per failed invoice) and their timelines."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from recovery.db import Base


class RecoveryCase(Base):
    __tablename__ = "recovery_cases"

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[str] = mapped_column(String(255), unique=True)
    customer_id: Mapped[str | None] = mapped_column(String(255), index=True)
    subscription_id: Mapped[str | None] = mapped_column(String(255), index=True)
    status: Mapped[str] = mapped_column(String(30))
    awaiting: Mapped[str | None] = mapped_column(String(30))
    decline_category: Mapped[str | None] = mapped_column(String(30))
    decline_code: Mapped[str | None] = mapped_column(String(60))
    card_brand: Mapped[str | None] = mapped_column(String(40))
    currency: Mapped[str] = mapped_column(String(3))
    amount_due: Mapped[int] = mapped_column(BigInteger)
    amount_recovered: Mapped[int] = mapped_column(BigInteger, default=0)
    recovered_via: Mapped[str | None] = mapped_column(String(30))
    close_reason: Mapped[str | None] = mapped_column(String(40))
    opened_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]
    our_attempts: Mapped[int] = mapped_column(default=0)
    next_retry_at: Mapped[datetime | None]
    next_step_reason: Mapped[str | None] = mapped_column(Text)
    hosted_invoice_url: Mapped[str | None] = mapped_column(Text)
    # When Stripe itself planned to charge next (invoice.next_payment_attempt at the last
    # failure): a payment around then is Stripe's retry.
    stripe_next_attempt_at: Mapped[datetime | None]
    dunning_paused: Mapped[bool] = mapped_column(default=False)

    __table_args__ = (
        Index("ix_recovery_cases_status_opened", "status", "opened_at"),
        Index("ix_recovery_cases_opened_at", "opened_at"),
    )


class CaseEvent(Base):
    """One line of a case's timeline: what happened, what was decided and why."""

    __tablename__ = "case_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("recovery_cases.id", ondelete="CASCADE"))
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(40))
    summary: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The same fact (an attempt, a decision for attempt n) is recorded once, whoever sees it.
    dedupe_key: Mapped[str | None] = mapped_column(String(255), unique=True)

    __table_args__ = (Index("ix_case_events_case_at", "case_id", "at"),)
