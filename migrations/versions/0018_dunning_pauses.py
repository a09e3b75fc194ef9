"""dunning pauses: a pause instead of a loss (retry.end_of_dunning = "offer_pause")

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04 15:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import recovery.db

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dunning_pauses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("subscription_id", sa.String(length=255), nullable=False),
        sa.Column("invoice_id", sa.String(length=255), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount_voided", sa.BigInteger(), nullable=False),
        sa.Column("months", sa.Integer(), nullable=False),
        sa.Column("resumes_at", recovery.db.UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("chosen_at", recovery.db.UTCDateTime(), nullable=False),
        sa.Column("applied_at", recovery.db.UTCDateTime(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["recovery_cases.id"],
            name=op.f("fk_dunning_pauses_case_id_recovery_cases"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dunning_pauses")),
        sa.UniqueConstraint("case_id", name=op.f("uq_dunning_pauses_case_id")),
    )
    with op.batch_alter_table("dunning_pauses", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_dunning_pauses_customer_id"), ["customer_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_dunning_pauses_subscription_id"), ["subscription_id"], unique=False
        )
        batch_op.create_index("ix_dunning_pauses_chosen_at", ["chosen_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("dunning_pauses", schema=None) as batch_op:
        batch_op.drop_index("ix_dunning_pauses_chosen_at")
        batch_op.drop_index(batch_op.f("ix_dunning_pauses_subscription_id"))
        batch_op.drop_index(batch_op.f("ix_dunning_pauses_customer_id"))
    op.drop_table("dunning_pauses")
