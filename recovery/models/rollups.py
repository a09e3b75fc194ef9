"""The overview's rollups: per day, currency and dimension, the additive figures of the cases and
cancel sessions of that day, kept by the worker (services/reporting/metrics/rollups.py).

A day is *dirty* while something of it changed since its rows were last computed: database
triggers (migration 0019) write an `overview_dirty_days` row in the same transaction as the
change, whatever wrote it (a webhook, a due action, a page, the demo, raw SQL). The overview
sums the rollup rows of the clean days and computes the dirty days directly, so a figure is
never stale and never counted twice. Text dimensions hold '' for "not known" (a key part of
the row); the reading side turns it back into None.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from recovery.db import Base
from recovery.models.cancel_flow import CancelSession
from recovery.models.cases import RecoveryCase
from recovery.models.mirror import SubscriptionItem


class OverviewDirtyDay(Base):
    """A (day, currency) whose rollup rows no longer match its source rows. Not unique: the
    triggers never wait on one another for it; the worker removes the rows it has read."""

    __tablename__ = "overview_dirty_days"

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[date]
    currency: Mapped[str] = mapped_column(String(3))

    __table_args__ = (Index("ix_overview_dirty_days_currency_day", "currency", "day"),)


class CaseDayRollup(Base):
    """Recovery cases opened on `day` in `currency` (the cohort's unit), as they stand now, per
    status, close reason, trigger, decline category and card brand."""

    __tablename__ = "case_day_rollups"

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[date]
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(30))
    close_reason: Mapped[str] = mapped_column(String(40))
    recovered_via: Mapped[str] = mapped_column(String(30))
    decline_category: Mapped[str] = mapped_column(String(30))
    card_brand: Mapped[str] = mapped_column(String(40))
    cases: Mapped[int] = mapped_column(BigInteger)
    amount_due: Mapped[int] = mapped_column(BigInteger)
    amount_recovered: Mapped[int] = mapped_column(BigInteger)
    # collected within 30 / 60 / 90 days of the failure (by_month.py)
    recovered_30: Mapped[int] = mapped_column(BigInteger)
    recovered_60: Mapped[int] = mapped_column(BigInteger)
    recovered_90: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_case_day_rollups_currency_day", "currency", "day"),)


class CancelDayRollup(Base):
    """Cancel sessions created on `day` in `currency`, per outcome, reason and whether a save
    was reversed since."""

    __tablename__ = "cancel_day_rollups"

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[date]
    currency: Mapped[str] = mapped_column(String(3))
    outcome: Mapped[str] = mapped_column(String(30))
    reason: Mapped[str] = mapped_column(String(40))
    reversed: Mapped[bool]
    sessions: Mapped[int] = mapped_column(BigInteger)
    mrr_before: Mapped[int] = mapped_column(BigInteger)
    mrr_after: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_cancel_day_rollups_currency_day", "currency", "day"),)


class CaseStatusDayRollup(Base):
    """`CaseDayRollup`'s sums per day, currency and status alone (migration 0022): the reads
    that need no other dimension - recovery by failure month (12 months), the headline sums
    per currency, the weekly trend - sum a row per status and day, not ~90."""

    __tablename__ = "case_status_day_rollups"

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[date]
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(30))
    cases: Mapped[int] = mapped_column(BigInteger)
    amount_due: Mapped[int] = mapped_column(BigInteger)
    amount_recovered: Mapped[int] = mapped_column(BigInteger)
    recovered_30: Mapped[int] = mapped_column(BigInteger)
    recovered_60: Mapped[int] = mapped_column(BigInteger)
    recovered_90: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_case_status_day_rollups_currency_day", "currency", "day"),)


class ChannelDayRollup(Base):
    """Of the recoveries the customer made among the cases opened on `day`, per channel of the
    last reminder sent before the payment (reminder_channels.py)."""

    __tablename__ = "channel_day_rollups"

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[date]
    currency: Mapped[str] = mapped_column(String(3))
    channel: Mapped[str] = mapped_column(String(20))
    cases: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_channel_day_rollups_currency_day", "currency", "day"),)


class HeldDayRollup(Base):
    """Saves (sessions created on `day`) and recoveries (cases opened on `day`) by their outcome
    at each window: `early` ones failed before their window ended (cancelled), whatever the
    date; the others are pending until `end_day` and then `outcome` - the one part of a window
    that depends on now, kept exact by the day the window ends."""

    __tablename__ = "held_day_rollups"

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[date]
    currency: Mapped[str] = mapped_column(String(3))
    kind: Mapped[str] = mapped_column(String(10))  # save | recovery
    window_days: Mapped[int]  # 30, 60, 90
    end_day: Mapped[date]
    early: Mapped[bool]
    outcome: Mapped[str] = mapped_column(String(10))  # held | not_held once the window ended
    count: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_held_day_rollups_currency_day", "currency", "day"),)


class HeldEndRollup(Base):
    """`HeldDayRollup`'s rows by the hour (UTC) each window ends as well, read only for the
    windows that end today: those ending in an hour gone by have their outcome, those ending
    in an hour to come are pending, and only the ones ending in this hour are read directly -
    a 24th of the day's saves and recoveries, instead of all of them with their invoices."""

    __tablename__ = "held_end_rollups"

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[date]
    currency: Mapped[str] = mapped_column(String(3))
    kind: Mapped[str] = mapped_column(String(10))
    window_days: Mapped[int]
    end_day: Mapped[date]
    end_hour: Mapped[int]
    early: Mapped[bool]
    outcome: Mapped[str] = mapped_column(String(10))
    count: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_held_end_rollups_currency_end_day", "currency", "end_day"),)


class RecoveryTimeDayRollup(Base):
    """Recovered cases opened on `day` in `currency` by whole days their recovery took (-1: a
    payment recorded before the failure): the median's histogram. The overview finds the day
    the middle case(s) fall in from it and reads only that day's recoveries, in order."""

    __tablename__ = "recovery_time_day_rollups"

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[date]
    currency: Mapped[str] = mapped_column(String(3))
    days_taken: Mapped[int]
    cases: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_recovery_time_day_rollups_currency_day", "currency", "day"),)


class CurrencyDayRollup(Base):
    """Cases opened and cancel sessions created on `day` in `currency` (as stored): the
    currency picker's order and the default currency, without counting every case per view."""

    __tablename__ = "currency_day_rollups"

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[date]
    currency: Mapped[str] = mapped_column(String(3))
    cases: Mapped[int] = mapped_column(BigInteger)
    sessions: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_currency_day_rollups_currency_day", "currency", "day"),)


class RecoveredPrice(Base):
    """A recovered case's subscription at its current price, per billing cadence: its items'
    unit amount x quantity summed per (interval, interval count), as `cohort.recovered_mrr`
    joins them. Kept by triggers (migration 0020) on `recovery_cases` (a case recovered, or no
    longer) and `subscription_items` (the mirror replaces a subscription's items whenever its
    state is applied), so the recovered monthly revenue reads these rows alone - an index-only
    scan of the period's recoveries - instead of joining every recovered subscription to its
    items on every view."""

    __tablename__ = "recovered_prices"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(index=True)
    currency: Mapped[str] = mapped_column(String(3))
    opened_at: Mapped[datetime]
    subscription_id: Mapped[str] = mapped_column(String(255), index=True)
    interval: Mapped[str | None] = mapped_column(String(10))
    interval_count: Mapped[int]
    amount: Mapped[int] = mapped_column(BigInteger)
    # The opening of this subscription's previous row with the same currency, cadence and
    # amount (ties by id), kept by triggers on this table (migration 0022): a row counts in a
    # period when it is its key's first there, i.e. this is None or before the period.
    prev_opened_at: Mapped[datetime | None]

    __table_args__ = (
        Index(
            "ix_recovered_prices_first",
            "opened_at",
            "prev_opened_at",
            "currency",
            "interval",
            "interval_count",
            "amount",
        ),
    )


class SubscriptionCard(Base):
    """Each subscription with the card Stripe would charge at its renewal - the subscription's
    default, else its customer's (`expiring_cards._default_card_id`) - and the currency it is
    priced in (`expiring_cards._in_currency`). Kept by triggers (migration 0020) on
    subscriptions, customers, payment_methods and subscription_items, in the same transaction
    as whatever mirror write moves it, so the overview's expiring cards are an index range scan
    of this table by currency and expiry month (the live subscriptions' cards expiring soon),
    and a notified card's subscription one probe by customer, instead of joining cards,
    subscriptions and customers on every view."""

    __tablename__ = "subscription_cards"

    subscription_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    customer_id: Mapped[str | None] = mapped_column(String(255))
    currency: Mapped[str] = mapped_column(String(3))
    live: Mapped[bool]  # active or trialing, not set to cancel at the period's end
    card_ref: Mapped[str | None] = mapped_column(String(255), index=True)  # the default's id
    # the card's row (None when it is not mirrored): its id, expiry and creation
    card_id: Mapped[str | None] = mapped_column(String(255))
    exp_month: Mapped[int | None]
    exp_year: Mapped[int | None]
    card_created: Mapped[int | None] = mapped_column(BigInteger)
    owned: Mapped[bool]  # the card is attached to the subscription's customer

    __table_args__ = (
        # A notice's subscription and the card it charges now, by customer: on PostgreSQL an
        # index-only probe (migration 0022; the 90-day overview makes 4,167 of them).
        Index(
            "ix_subscription_cards_customer_id",
            "customer_id",
            postgresql_include=[
                "subscription_id",
                "currency",
                "card_id",
                "exp_month",
                "exp_year",
                "card_created",
            ],
        ),
        Index(
            "ix_subscription_cards_expiring",
            "currency",
            "exp_year",
            "exp_month",
            "live",
            "owned",
            "card_id",
        ),
    )


# The overview's figures that are not sums (read directly whatever the rollups): the period's
# recovered subscriptions and their monthly price, and the median days to recover, read from
# these two indexes alone (index-only scans on PostgreSQL) rather than from the tables' rows.
OVERVIEW_INDEXES = (
    Index(
        "ix_recovery_cases_recovered_cohort",
        RecoveryCase.status,
        RecoveryCase.opened_at,
        RecoveryCase.currency,
        RecoveryCase.subscription_id,
        RecoveryCase.closed_at,
    ),
    Index(
        "ix_subscription_items_monthly",
        SubscriptionItem.subscription_id,
        SubscriptionItem.interval,
        SubscriptionItem.interval_count,
        SubscriptionItem.unit_amount,
        SubscriptionItem.quantity,
    ),
)

# Migration 0020: the saves and recoveries whose 30/60/90-day window ends today are read
# directly (whether it has ended depends on the hour): by the day they were decided / paid.
WINDOW_END_INDEXES = (
    Index("ix_recovery_cases_status_closed", RecoveryCase.status, RecoveryCase.closed_at),
    Index("ix_cancel_sessions_decided_at", CancelSession.decided_at),
)

# Migration 0021: the period's latest free-text cancel answers (`cancel_flow.recent_answers`)
# from the sessions that have one, not every session of the period. (0021 also adds
# ix_recovery_cases_recovery_seconds on PostgreSQL only: recovery/migrate.py.)
ANSWER_INDEXES = (
    Index(
        "ix_cancel_sessions_answers",
        CancelSession.currency,
        CancelSession.created_at,
        postgresql_where=text("reason_text IS NOT NULL AND reason_text <> ''"),
        sqlite_where=text("reason_text IS NOT NULL AND reason_text <> ''"),
    ),
)
