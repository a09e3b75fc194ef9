"""Login-free card-update links: one row per link handed to a customer (the token is not kept)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from recovery.db import Base


class CardUpdateLink(Base):
    """A link `/update/<token>` bound to one customer and one recovery case.

    Only the SHA-256 of the token is stored: a database leak does not hand out working links,
    and a link can never be shown again (each message gets a fresh one).
    """

    __tablename__ = "card_update_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    customer_id: Mapped[str] = mapped_column(String(255), index=True)
    case_id: Mapped[int] = mapped_column(
        ForeignKey("recovery_cases.id", ondelete="CASCADE"), index=True
    )
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
