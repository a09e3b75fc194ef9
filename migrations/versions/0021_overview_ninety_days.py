"""overview at 90 days: the median's middle recoveries and the recent answers by index

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-04 23:25:00

Two reads of the 90-day overview scanned the whole period to keep a few rows
(bench/dashboard_scale.py, 1M invoices):
- the median days to recover reads the recoveries of its middle day(s) of recovery time
  (services/reporting/metrics/rollups.py `median_days`): an index-only scan of every recovered
  case of the period (34k at 90 days) filtered by the seconds taken, 20-22 ms. The index by
  (status, currency, seconds taken, opened_at) finds exactly those (811): 0.7 ms. PostgreSQL
  only: the seconds are the engine's own date arithmetic (`cohort.seconds_between`), and the
  index's expression must be the query's; SQLite keeps the plain scan.
- the latest free-text cancel answers (`cancel_flow.recent_answers`) read every session of the
  period (22k) to keep the 1.9k with a text: a partial index of those by (currency,
  created_at), 7.6 -> 1.4 ms.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WITH_TEXT = "reason_text IS NOT NULL AND reason_text <> ''"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # the expression `cohort.seconds_between` renders on PostgreSQL, as the median's
        # query writes it (a different expression would not be matched by the planner)
        op.execute(
            "CREATE INDEX ix_recovery_cases_recovery_seconds ON recovery_cases "
            "(status, currency, round(EXTRACT(epoch FROM closed_at - opened_at)), opened_at)"
        )
    op.create_index(
        "ix_cancel_sessions_answers",
        "cancel_sessions",
        ["currency", "created_at"],
        postgresql_where=sa.text(WITH_TEXT),
        sqlite_where=sa.text(WITH_TEXT),
    )


def downgrade() -> None:
    op.drop_index("ix_cancel_sessions_answers", table_name="cancel_sessions")
    op.execute("DROP INDEX IF EXISTS ix_recovery_cases_recovery_seconds")
