"""trigram indexes for the dashboard's search by any part of a name or email (PostgreSQL)

The case list's search finds customers whose name or email contains what was typed
(`ILIKE '%part%'`). A B-tree cannot answer that; pg_trgm's GIN indexes can, so a search at
200k cases reads the few matching customers instead of every one (bench/dashboard_scale.py).

pg_trgm ships with PostgreSQL (contrib) and is a trusted extension from PostgreSQL 13 on, so a
database owner may create it. Where it cannot be created (an older server, a role without the
right) the migration says so and goes on: search still works, as a scan of the customers.
SQLite has no such index; its search scans, which is fine at the sizes SQLite is for.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 14:00:00
"""

import logging
from collections.abc import Sequence

from alembic import op
from sqlalchemy.exc import DBAPIError

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")

INDEXES = {
    "ix_customers_email_trgm": "email",
    "ix_customers_name_trgm": "name",
}


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    try:
        with bind.begin_nested():
            op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except DBAPIError as exc:
        log.warning(
            "pg_trgm could not be created (%s): the dashboard's search by part of a name or "
            "email will scan the customers instead of using an index",
            str(exc.orig).strip().splitlines()[0],
        )
        return
    for name, column in INDEXES.items():
        op.execute(
            f"CREATE INDEX IF NOT EXISTS {name} ON customers USING gin ({column} gin_trgm_ops)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")
