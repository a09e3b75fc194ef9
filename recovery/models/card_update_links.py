"""Login-free card-update links: one row per link handed to a customer (the token is not kept)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from recovery.db import Base


class CardUpdateLink(Base):
    """A link `/update/<token>` bound to one customer and either one recovery case (money is
    owed) or one subscription whose card expires before its renewal (no case).

    Only the SHA-256 of the token is stored: a database leak does not hand out working links.
    A link carried by an outbox message has a token derived from the secret key and the
    message's dedupe key (`message_key`), so the sender can put it into the message at send
    time - and again, identically, on a retry - without the token ever being stored.
    """

    __tablename__ = "card_update_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    customer_id: Mapped[str] = mapped_column(String(255), index=True)
    case_id: Mapped[int | None] = mapped_column(
        ForeignKey("recovery_cases.id", ondelete="CASCADE"), index=True
    )
    subscription_id: Mapped[str | None] = mapped_column(String(255), index=True)
    message_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    opened_count: Mapped[int] = mapped_column(default=0)
    first_opened_at: Mapped[datetime | None]
    last_opened_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    # The newest Checkout Session started from this link, and how many were finished without
    # the invoice getting paid (a declined new card): the next Checkout needs a fresh
    # idempotency key, while a double click on the same attempt must reuse the same one.
    checkout_session_id: Mapped[str | None] = mapped_column(String(255))
    checkout_round: Mapped[int] = mapped_column(default=0)
    # The SetupIntent whose card was last put to work, and what came of it: a refreshed return
    # page or a late webhook finds it here and charges nothing twice.
    last_setup_intent_id: Mapped[str | None] = mapped_column(String(255))
    last_outcome: Mapped[str | None] = mapped_column(String(40))
