"""raw event payloads compressed with LZ4 on PostgreSQL

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-05 13:20:00

A Stripe event's body is 2-4 KB of JSON: over PostgreSQL's TOAST threshold (about 2 KB), so
every stored webhook is compressed, by default with pglz. Storing 12,000 bodies of the chaos
replay took 80 and 57 us a row with pglz and 35 and 32 us with LZ4 (alternately, the same
rows; LZ4 keeps them 25 % larger), and storing is what a webhook's request and the replay wait
for. PostgreSQL 14+ built with LZ4 (Debian's and the official images are) - elsewhere nothing
changes. Only new values are compressed with it; stored ones stay as they are, readable either
way. SQLite stores text uncompressed: nothing to do.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _lz4_available() -> bool:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return False
    # enumvals lists 'lz4' only when the server was built --with-lz4 (PostgreSQL 14+).
    values = bind.execute(
        sa.text("SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'")
    ).scalar()
    return bool(values) and "lz4" in values


def upgrade() -> None:
    if _lz4_available():
        op.execute("ALTER TABLE stripe_events ALTER COLUMN payload SET COMPRESSION lz4")


def downgrade() -> None:
    if _lz4_available():
        op.execute("ALTER TABLE stripe_events ALTER COLUMN payload SET COMPRESSION DEFAULT")
