"""overview at 90 days: a subscription's first recovery in a period, and case totals per status

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-05 00:45:00

The slowest reads left in the 90-day overview (bench/dashboard_scale.py, 1M invoices):
- the recovered monthly revenue counts each subscription once in a period, however many of
  its cases were recovered: `recovered_prices` made distinct per (currency, subscription,
  cadence, amount) - a hash of the period's 46k rows to keep 32k, 26-35 ms. Each row now
  holds `prev_opened_at`, the opening of the same subscription's previous row of the same
  (currency, cadence, amount) (ties by id); a row is its key's first in [start, end) exactly
  when that is NULL or before start, so the read sums those rows as they come off the index.
  Kept by triggers on `recovered_prices` itself: whenever rows of a subscription come or
  go (a case recovered or reopened, the mirror replacing its items), its few rows are
  numbered again (PostgreSQL: once per statement; SQLite: per row).
- the recovery by failure month (12 months), the headline sums per currency and the weekly
  trend summed `case_day_rollups` (90 rows a day and currency, one per status x reason x
  trigger x category x brand): 32k rows for the months alone, 10 ms. `case_status_day_rollups`
  holds the same sums per day, currency and status only (models/rollups.py), kept by the
  worker's refresh with the others; filled here from `case_day_rollups` (their days' dirty
  rows stay, so a day the worker has not refreshed yet is still read directly).
- the expiry notices (PostgreSQL): the period's sent `expiry:` notices from a partial index of
  those (database-only: recovery/migrate.py), and `ix_subscription_cards_customer_id` with the
  columns the notices read INCLUDEd, so each notice's probe is index-only.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import recovery.db

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The row's key, as `rollups.recovered_mrr_by_currency` made it distinct: the subscription,
# the case's currency, the cadence and the price.
KEY = 'subscription_id, currency, "interval", interval_count, amount'
PREVIOUS = f"lag(opened_at) OVER (PARTITION BY {KEY} ORDER BY opened_at, id)"
CARD_COLUMNS = ("subscription_id", "currency", "card_id", "exp_month", "exp_year", "card_created")
EXPIRY_SENT = "status = 'sent' AND about LIKE 'expiry:%'"
SUMS = ("cases", "amount_due", "amount_recovered", "recovered_30", "recovered_60", "recovered_90")


def _renumber(where: str, postgres: bool) -> str:
    """Set each row's `prev_opened_at` where it is not what the rows say (a window function
    and UPDATE ... FROM: SQLite 3.33 or later)."""
    differs = "IS DISTINCT FROM" if postgres else "IS NOT"
    return (
        f"UPDATE recovered_prices SET prev_opened_at = w.prev FROM "
        f"(SELECT id, {PREVIOUS} AS prev FROM recovered_prices WHERE {where}) w "
        f"WHERE recovered_prices.id = w.id "
        f"AND recovered_prices.prev_opened_at {differs} w.prev"
    )


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.add_column(
        "recovered_prices",
        sa.Column("prev_opened_at", recovery.db.UTCDateTime(), nullable=True),
    )
    op.execute(_renumber("true" if postgres else "1", postgres))
    op.drop_index("ix_recovered_prices_opened", table_name="recovered_prices")
    op.create_index(
        "ix_recovered_prices_first",
        "recovered_prices",
        ["opened_at", "prev_opened_at", "currency", "interval", "interval_count", "amount"],
    )
    if postgres:
        # Once per statement over the subscriptions it touched (transition tables), not once
        # per row: the mirror replacing a subscription's items deletes and inserts all its
        # rows, and a bulk write renumbers each subscription once. Its cost on the bench's
        # database: ~0.27 ms more per item row of a recovered subscription (README).
        for when, rows, changed in (("insert", "NEW", "added"), ("delete", "OLD", "removed")):
            touched = f"subscription_id IN (SELECT subscription_id FROM {changed})"
            op.execute(
                f"""CREATE FUNCTION recovered_prices_first_{when}() RETURNS trigger AS $$
                BEGIN
                  -- a statement trigger fires for no rows too: 0020's case trigger runs its
                  -- INSERT for every case written, recovered or not
                  IF EXISTS (SELECT 1 FROM {changed}) THEN
                    {_renumber(touched, True)};
                  END IF;
                  RETURN NULL;
                END $$ LANGUAGE plpgsql"""
            )
            op.execute(
                f"CREATE TRIGGER recovered_prices_first_{when} AFTER {when.upper()} ON "
                f"recovered_prices REFERENCING {rows} TABLE AS {changed} FOR EACH STATEMENT "
                f"EXECUTE FUNCTION recovered_prices_first_{when}()"
            )
    else:
        for when, row in (("insert", "NEW"), ("delete", "OLD")):
            op.execute(
                f"CREATE TRIGGER recovered_prices_first_{when} AFTER {when.upper()} ON "
                f"recovered_prices BEGIN "
                f"{_renumber(f'subscription_id = {row}.subscription_id', postgres)}; END"
            )
    op.create_table(
        "case_status_day_rollups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=30), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in SUMS),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_status_day_rollups")),
    )
    op.create_index(
        "ix_case_status_day_rollups_currency_day",
        "case_status_day_rollups",
        ["currency", "day"],
    )
    if postgres:
        # The expiry notices' read (`expiring_cards.expiring_cards_kept`): the period's sent
        # notices from an index of those alone, and each one's subscription and card now by
        # an index-only probe of `subscription_cards` (4,167 probes at 90 days).
        op.execute(
            "CREATE INDEX ix_outbox_messages_expiry_sent ON outbox_messages (sent_at) "
            f"INCLUDE (about, customer_id, dedupe_key) WHERE {EXPIRY_SENT}"
        )
        op.drop_index("ix_subscription_cards_customer_id", table_name="subscription_cards")
        op.create_index(
            "ix_subscription_cards_customer_id",
            "subscription_cards",
            ["customer_id"],
            postgresql_include=list(CARD_COLUMNS),
        )
    sums = ", ".join(SUMS)
    op.execute(
        f"INSERT INTO case_status_day_rollups (day, currency, status, {sums}) "
        f"SELECT day, currency, status, {', '.join(f'sum({s})' for s in SUMS)} "
        f"FROM case_day_rollups GROUP BY day, currency, status"
    )


def downgrade() -> None:
    op.drop_index("ix_case_status_day_rollups_currency_day", table_name="case_status_day_rollups")
    op.drop_table("case_status_day_rollups")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_subscription_cards_customer_id", table_name="subscription_cards")
        op.create_index("ix_subscription_cards_customer_id", "subscription_cards", ["customer_id"])
        op.execute("DROP INDEX IF EXISTS ix_outbox_messages_expiry_sent")
        for when in ("insert", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS recovered_prices_first_{when} ON recovered_prices")
            op.execute(f"DROP FUNCTION IF EXISTS recovered_prices_first_{when}()")
    else:
        for when in ("insert", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS recovered_prices_first_{when}")
    op.drop_index("ix_recovered_prices_first", table_name="recovered_prices")
    op.create_index(
        "ix_recovered_prices_opened",
        "recovered_prices",
        ["opened_at", "currency", "subscription_id", "interval", "interval_count", "amount"],
    )
    op.drop_column("recovered_prices", "prev_opened_at")
