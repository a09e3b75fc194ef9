"""The webhook inbox: every Stripe event exactly as received, stored before we answer 2xx."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from recovery.db import Base


class EventStatus(StrEnum):
    PENDING = "pending"  # stored, not yet (successfully) processed
    PROCESSED = "processed"
    FAILED = "failed"  # parked after too many errors; `recovery events replay --failed`


class StripeEvent(Base):
    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # evt_...
    type: Mapped[str] = mapped_column(String(100))
    api_version: Mapped[str | None] = mapped_column(String(40))
    # Stripe's unix timestamp: orders state changes of one object
    created: Mapped[int] = mapped_column(BigInteger)
    livemode: Mapped[bool] = mapped_column(default=False)
    object_id: Mapped[str | None] = mapped_column(String(255), index=True)
    payload: Mapped[str] = mapped_column(Text)  # the raw JSON body, byte for byte as signed
    received_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(20), default=EventStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(Text)
    processed_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_stripe_events_due", "status", "next_attempt_at"),
        Index("ix_stripe_events_received_at", "received_at"),
    )
