"""Outreach beyond the failed payment: account contacts, annual-term offers, win-backs, the
links their messages carry and the marketing opt-outs we honour."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from recovery.db import Base


class AccountContact(Base):
    """A person at a customer (a business account) with a role: `billing` gets the reminders,
    `owner` also gets the final notice, `admin` is recorded only. From the customer's metadata
    (`source = "metadata"`, kept in step with it) or the API (`source = "api"`)."""

    __tablename__ = "account_contacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(255), index=True)
    role: Mapped[str] = mapped_column(String(20))
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(20))  # E.164
    locale: Mapped[str | None] = mapped_column(String(20))
    sms_consent: Mapped[bool] = mapped_column(default=False)
    source: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime]
    removed_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("customer_id", "role", "email", name="uq_account_contacts_role_email"),
    )


class TermOffer(Base):
    """One annual-term offer per subscription, ever: offered, then accepted or declined."""

    __tablename__ = "term_offers"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscription_id: Mapped[str] = mapped_column(String(255), unique=True)
    customer_id: Mapped[str] = mapped_column(String(255), index=True)
    item_id: Mapped[str] = mapped_column(String(255))
    monthly_price: Mapped[str] = mapped_column(String(255))
    annual_price: Mapped[str] = mapped_column(String(255))
    quantity: Mapped[int] = mapped_column(default=1)
    currency: Mapped[str] = mapped_column(String(3))
    monthly_amount: Mapped[int] = mapped_column(BigInteger)  # per unit, minor units
    annual_amount: Mapped[int | None] = mapped_column(BigInteger)  # per unit, once known
    proration: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))  # offered | accepted | declined | failed
    offered_at: Mapped[datetime]
    opened_at: Mapped[datetime | None]
    decided_at: Mapped[datetime | None]
    applied_at: Mapped[datetime | None]
    # What Stripe charged (or will charge at charge_at) for the switch, from its answer.
    charged_amount: Mapped[int | None] = mapped_column(BigInteger)
    charge_at: Mapped[datetime | None]
    schedule_id: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_term_offers_offered_at", "offered_at"),)


class WinBack(Base):
    """The win-back sequence of one ended subscription, and whether the customer came back."""

    __tablename__ = "win_backs"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscription_id: Mapped[str] = mapped_column(String(255), unique=True)
    customer_id: Mapped[str] = mapped_column(String(255), index=True)
    price_id: Mapped[str] = mapped_column(String(255))
    quantity: Mapped[int] = mapped_column(default=1)
    currency: Mapped[str] = mapped_column(String(3))
    monthly_amount: Mapped[int] = mapped_column(BigInteger)  # what the plan brought a month
    ended_at: Mapped[datetime]
    ended_by: Mapped[str] = mapped_column(String(20))  # cancel_flow | dunning | business
    status: Mapped[str] = mapped_column(String(20))  # planned | stopped | reactivated
    stop_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    checkout_session_id: Mapped[str | None] = mapped_column(String(255))
    new_subscription_id: Mapped[str | None] = mapped_column(String(255))
    reactivated_at: Mapped[datetime | None]
    reactivated_amount: Mapped[int | None] = mapped_column(BigInteger)  # monthly revenue back

    __table_args__ = (Index("ix_win_backs_created_at", "created_at"),)


class OutreachLink(Base):
    """The login-free link an outreach message carries (`/annual/<token>`,
    `/come-back/<token>`, `/unsubscribe/<token>`: one token, several pages). The token is
    derived from the secret key and the message's dedupe key and put in by the sender, as for
    card-update links; only its SHA-256 is kept."""

    __tablename__ = "outreach_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    message_key: Mapped[str] = mapped_column(String(255), unique=True)
    kind: Mapped[str] = mapped_column(String(20))  # term_offer | win_back
    customer_id: Mapped[str] = mapped_column(String(255), index=True)
    recipient: Mapped[str] = mapped_column(String(320))
    contact_id: Mapped[int | None] = mapped_column(index=True)
    term_offer_id: Mapped[int | None] = mapped_column(index=True)
    win_back_id: Mapped[int | None] = mapped_column(index=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    opened_at: Mapped[datetime | None]


class MarketingOptOut(Base):
    """An address that unsubscribed from a customer's marketing mail (win-back, annual offers).
    Per contact: one person leaving does not silence the others. Reminders about money owed
    are not marketing and still go out."""

    __tablename__ = "marketing_opt_outs"

    customer_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), primary_key=True)
    via: Mapped[str] = mapped_column(String(20))  # one_click | page | declined
    at: Mapped[datetime]
