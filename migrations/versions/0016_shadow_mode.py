"""shadow mode: what a due action would have done

RECOVERY_MODE=shadow runs every decision but calls no provider: a due action that comes due is
finished with the status `shadow` (a plain string column, no enum type to alter) and a note of
what it would have done. Outbox messages take the same status, also a plain string.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("due_actions", sa.Column("shadow_note", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("due_actions", "shadow_note")
