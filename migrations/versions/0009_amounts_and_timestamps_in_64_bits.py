"""amounts and Stripe timestamps in 64-bit columns

An invoice in a zero-decimal currency (VND, for one) passes 2**31 minor units at about
USD 85,000, and Stripe timestamps pass 2**31 in 2038 (a subscription's cancel_at can already).
Small counts stay 32-bit. SQLite stores every integer in up to 8 bytes anyway; the batch
operations only rewrite its declared types.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23 14:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS: dict[str, tuple[str, ...]] = {
    "stripe_events": ("created",),
    "customers": ("version_ts", "created"),
    "payment_methods": ("version_ts", "created"),
    "subscriptions": ("version_ts", "created"),
    "subscription_items": ("unit_amount",),
    "invoices": ("version_ts", "created", "amount_due", "amount_paid", "amount_remaining"),
    "payment_attempts": ("version_ts", "created", "amount"),
    "recovery_cases": ("amount_due", "amount_recovered"),
    "cancel_sessions": ("mrr_before", "mrr_after"),
}


def _retype(old: type[sa.types.TypeEngine[int]], new: type[sa.types.TypeEngine[int]]) -> None:
    for table, columns in COLUMNS.items():
        with op.batch_alter_table(table) as batch_op:
            for column in columns:
                batch_op.alter_column(column, type_=new(), existing_type=old())


def upgrade() -> None:
    _retype(sa.Integer, sa.BigInteger)


def downgrade() -> None:
    _retype(sa.BigInteger, sa.Integer)
