"""The outbox: every email and SMS we mean to send, written in the same transaction as the
decision that causes it and sent by the worker after commit; and the SMS opt-outs we honour."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from recovery.db import Base


class MessageStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SHADOW = "shadow"  # RECOVERY_MODE=shadow: would have been sent then; never sent


class OutboxMessage(Base):
    __tablename__ = "outbox_messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    # What the message is about: `case:<id>` for a recovery case, `expiry:<sub>:<card>` for an
    # expiring-card notice. case_id is set for case messages.
    about: Mapped[str] = mapped_column(String(255))
    case_id: Mapped[int | None] = mapped_column(index=True)
    customer_id: Mapped[str | None] = mapped_column(String(255), index=True)
    channel: Mapped[str] = mapped_column(String(10))  # email | sms
    template: Mapped[str] = mapped_column(String(60))
    step: Mapped[str] = mapped_column(String(60))
    locale: Mapped[str] = mapped_column(String(10))
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(Text, default="")
    body: Mapped[str] = mapped_column(Text)
    send_after: Mapped[datetime]
    # The customer-local day a reminder takes (at most one reminder per customer per day,
    # enforced by the unique constraint); NULL for confirmations and once cancelled or failed.
    cap_day: Mapped[str | None] = mapped_column(String(10))
    dedupe_key: Mapped[str] = mapped_column(String(255), unique=True)
    status: Mapped[str] = mapped_column(String(20), default=MessageStatus.PENDING)
    provider_id: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("customer_id", "cap_day", name="uq_outbox_messages_customer_day"),
        Index("ix_outbox_messages_status_send_after", "status", "send_after"),
        # See DueAction's subject index: a subject's pending messages, found without a scan.
        Index("ix_outbox_messages_about_status", "about", "status"),
    )


class SmsOptOut(Base):
    """A phone number's SMS standing: opted out by STOP (or Twilio's 21610), back in by START."""

    __tablename__ = "sms_opt_outs"

    phone: Mapped[str] = mapped_column(String(20), primary_key=True)  # E.164
    opted_out: Mapped[bool] = mapped_column(default=True)
    via: Mapped[str] = mapped_column(String(40))  # inbound_stop | twilio_21610 | inbound_start
    changed_at: Mapped[datetime]
