"""A pause instead of a loss: the pause a customer chose from the final notice's link
(`retry.end_of_dunning = "offer_pause"`), one per recovery case."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from recovery.db import Base


class DunningPause(Base):
    """Chosen (`accepting`: the request is fixed, Stripe not yet answered), then `accepted`
    (collection paused in Stripe, the unpaid invoice voided, the case closed as paused) or
    `failed` (Stripe refused for good; nothing changed)."""

    __tablename__ = "dunning_pauses"

    id: Mapped[int] = mapped_column(primary_key=True)
    # One per case: a double submit or a second tab finds the row and replays its request.
    case_id: Mapped[int] = mapped_column(
        ForeignKey("recovery_cases.id", ondelete="CASCADE"), unique=True
    )
    customer_id: Mapped[str] = mapped_column(String(255), index=True)
    subscription_id: Mapped[str] = mapped_column(String(255), index=True)
    invoice_id: Mapped[str] = mapped_column(String(255))
    currency: Mapped[str] = mapped_column(String(3))
    amount_voided: Mapped[int] = mapped_column(BigInteger)  # the unpaid invoice, minor units
    months: Mapped[int]
    resumes_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(20))
    chosen_at: Mapped[datetime]
    applied_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_dunning_pauses_chosen_at", "chosen_at"),)
