"""a subject's pending actions and messages by one composite index

Every event asks for a case's pending due actions and outbox messages. With an index on the
subject alone, SQLite (which keeps no statistics) chose the status index instead and walked
every pending row: the 2,000-customer chaos replay ran at a third of its speed on SQLite.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23 15:15:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("due_actions") as batch_op:
        batch_op.drop_index("ix_due_actions_subject")
        batch_op.create_index("ix_due_actions_subject_status", ["subject", "status"])
    with op.batch_alter_table("outbox_messages") as batch_op:
        batch_op.drop_index("ix_outbox_messages_about")
        batch_op.create_index("ix_outbox_messages_about_status", ["about", "status"])


def downgrade() -> None:
    with op.batch_alter_table("outbox_messages") as batch_op:
        batch_op.drop_index("ix_outbox_messages_about_status")
        batch_op.create_index("ix_outbox_messages_about", ["about"])
    with op.batch_alter_table("due_actions") as batch_op:
        batch_op.drop_index("ix_due_actions_subject_status")
        batch_op.create_index("ix_due_actions_subject", ["subject"])
