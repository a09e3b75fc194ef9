"""index payment methods by expiry month

The overview's expiring-cards figure starts from the cards expiring in the next two months,
found by (exp_year, exp_month) range; without this index it read every card (a sequential scan
of 250k rows per page view in bench/dashboard_scale.py).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 14:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("payment_methods", schema=None) as batch_op:
        batch_op.create_index("ix_payment_methods_expiry", ["exp_year", "exp_month"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("payment_methods", schema=None) as batch_op:
        batch_op.drop_index("ix_payment_methods_expiry")
