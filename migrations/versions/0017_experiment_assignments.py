"""experiment assignments, subjects and routing (issue 11)

A customer's arm per experiment (unique per experiment and customer: the first arm is kept
forever), the cases and cancel sessions each arm covers, and the log of Thompson routing's
reassignments of shares with the posteriors that caused them.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 15:26:32.359236
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import recovery.db

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "experiment_assignments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_key", sa.String(length=255), nullable=False),
        sa.Column("arm", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("subject", sa.String(length=80), nullable=False),
        sa.Column("assigned_at", recovery.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiment_assignments")),
        sa.UniqueConstraint(
            "experiment_key", "customer_id", name="uq_experiment_assignments_customer"
        ),
    )
    with op.batch_alter_table("experiment_assignments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_experiment_assignments_key_arm", ["experiment_key", "arm"], unique=False
        )

    op.create_table(
        "experiment_routing",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_key", sa.String(length=255), nullable=False),
        sa.Column("at", recovery.db.UTCDateTime(), nullable=False),
        sa.Column("shares", sa.JSON(), nullable=False),
        sa.Column("posteriors", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiment_routing")),
    )
    with op.batch_alter_table("experiment_routing", schema=None) as batch_op:
        batch_op.create_index(
            "ix_experiment_routing_key_at", ["experiment_key", "at"], unique=False
        )

    op.create_table(
        "experiment_subjects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_key", sa.String(length=255), nullable=False),
        sa.Column("arm", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=True),
        sa.Column("cancel_session_id", sa.String(length=40), nullable=True),
        sa.Column("assigned_at", recovery.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_experiment_subjects")),
        sa.UniqueConstraint(
            "cancel_session_id", name=op.f("uq_experiment_subjects_cancel_session_id")
        ),
        sa.UniqueConstraint("case_id", name=op.f("uq_experiment_subjects_case_id")),
    )
    with op.batch_alter_table("experiment_subjects", schema=None) as batch_op:
        batch_op.create_index(
            "ix_experiment_subjects_key_arm", ["experiment_key", "arm"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("experiment_subjects", schema=None) as batch_op:
        batch_op.drop_index("ix_experiment_subjects_key_arm")

    op.drop_table("experiment_subjects")
    with op.batch_alter_table("experiment_routing", schema=None) as batch_op:
        batch_op.drop_index("ix_experiment_routing_key_at")

    op.drop_table("experiment_routing")
    with op.batch_alter_table("experiment_assignments", schema=None) as batch_op:
        batch_op.drop_index("ix_experiment_assignments_key_arm")

    op.drop_table("experiment_assignments")
