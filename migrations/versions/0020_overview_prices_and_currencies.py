"""overview at scale: recovered cases' prices kept by triggers, currencies per day, window ends

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-04 22:05:00

- `recovered_prices`: each recovered case's subscription at its current price per billing
  cadence (models/rollups.py `RecoveredPrice`), kept by triggers in the same transaction as the
  change - a case recovered (or no longer: reopened, deleted, moved), a subscription's items
  replaced by the mirror - whoever writes it, so the recovered monthly revenue is exact and
  fresh without joining every recovered subscription to its items on each view.
- `currency_day_rollups`: cases and cancel sessions per day and currency, kept by the
  worker's refresh with the other rollups (migration 0019's dirty days); filled here.
- indexes by the day a recovery was paid and a save decided: the windows that end today.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import recovery.db

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PRICE_COLUMNS = 'case_id, currency, opened_at, subscription_id, "interval", interval_count, amount'
IV = 'i."interval"'  # a keyword in PostgreSQL
AMOUNT = "coalesce(sum(coalesce(i.unit_amount, 0) * i.quantity), 0)"


def _prices_of_case(row: str) -> str:
    """The rows of one case, when it is recovered: its subscription's items per cadence."""
    return (
        f"INSERT INTO recovered_prices ({PRICE_COLUMNS}) "
        f"SELECT {row}.id, {row}.currency, {row}.opened_at, {row}.subscription_id, "
        f"{IV}, i.interval_count, {AMOUNT} FROM subscription_items i "
        f"WHERE i.subscription_id = {row}.subscription_id AND {row}.status = 'recovered' "
        f"GROUP BY {IV}, i.interval_count"
    )


def _prices_of_subscription(sub: str) -> list[str]:
    """Every recovered case of a subscription again, at its items as they are now."""
    return [
        f"DELETE FROM recovered_prices WHERE subscription_id = {sub}",
        f"INSERT INTO recovered_prices ({PRICE_COLUMNS}) "
        f"SELECT c.id, c.currency, c.opened_at, c.subscription_id, {IV}, "
        f"i.interval_count, {AMOUNT} FROM recovery_cases c "
        f"JOIN subscription_items i ON i.subscription_id = c.subscription_id "
        f"WHERE c.subscription_id = {sub} AND c.status = 'recovered' "
        f"GROUP BY c.id, c.currency, c.opened_at, c.subscription_id, {IV}, "
        f"i.interval_count",
    ]


CASE_COLUMNS = "status, currency, opened_at, subscription_id"
ITEM_COLUMNS = 'subscription_id, unit_amount, quantity, "interval", interval_count'


def _sqlite_triggers() -> None:
    forget = "DELETE FROM recovered_prices WHERE case_id = OLD.id"
    op.execute(
        "CREATE TRIGGER recovered_prices_cases_insert AFTER INSERT ON recovery_cases "
        f"BEGIN {_prices_of_case('NEW')}; END"
    )
    op.execute(
        f"CREATE TRIGGER recovered_prices_cases_update AFTER UPDATE OF {CASE_COLUMNS} "
        f"ON recovery_cases BEGIN {forget}; {_prices_of_case('NEW')}; END"
    )
    op.execute(
        "CREATE TRIGGER recovered_prices_cases_delete AFTER DELETE ON recovery_cases "
        f"BEGIN {forget}; END"
    )
    new, old = (
        _prices_of_subscription("NEW.subscription_id"),
        _prices_of_subscription("OLD.subscription_id"),
    )
    op.execute(
        "CREATE TRIGGER recovered_prices_items_insert AFTER INSERT ON subscription_items "
        f"BEGIN {'; '.join(new)}; END"
    )
    op.execute(
        f"CREATE TRIGGER recovered_prices_items_update AFTER UPDATE OF {ITEM_COLUMNS} "
        f"ON subscription_items BEGIN {'; '.join(old + new)}; END"
    )
    op.execute(
        "CREATE TRIGGER recovered_prices_items_delete AFTER DELETE ON subscription_items "
        f"BEGIN {'; '.join(old)}; END"
    )


def _postgres_triggers() -> None:
    op.execute(
        f"""CREATE FUNCTION recovered_prices_cases() RETURNS trigger AS $$
        BEGIN
          IF TG_OP IN ('UPDATE', 'DELETE') THEN
            DELETE FROM recovered_prices WHERE case_id = OLD.id;
          END IF;
          IF TG_OP IN ('INSERT', 'UPDATE') THEN {_prices_of_case("NEW")}; END IF;
          RETURN NULL;
        END $$ LANGUAGE plpgsql"""
    )
    op.execute(
        f"CREATE TRIGGER recovered_prices_cases AFTER INSERT OR DELETE OR UPDATE OF "
        f"{CASE_COLUMNS} ON recovery_cases FOR EACH ROW EXECUTE FUNCTION recovered_prices_cases()"
    )
    new, old = (_prices_of_subscription(f"{r}.subscription_id") for r in ("NEW", "OLD"))
    op.execute(
        f"""CREATE FUNCTION recovered_prices_items() RETURNS trigger AS $$
        BEGIN
          IF TG_OP IN ('UPDATE', 'DELETE') THEN {"; ".join(old)}; END IF;
          IF TG_OP IN ('INSERT', 'UPDATE') THEN {"; ".join(new)}; END IF;
          RETURN NULL;
        END $$ LANGUAGE plpgsql"""
    )
    op.execute(
        f"CREATE TRIGGER recovered_prices_items AFTER INSERT OR DELETE OR UPDATE OF "
        f"{ITEM_COLUMNS} ON subscription_items FOR EACH ROW "
        f"EXECUTE FUNCTION recovered_prices_items()"
    )


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "recovered_prices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("opened_at", recovery.db.UTCDateTime(), nullable=False),
        sa.Column("subscription_id", sa.String(length=255), nullable=False),
        sa.Column("interval", sa.String(length=10), nullable=True),
        sa.Column("interval_count", sa.Integer(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recovered_prices")),
    )
    op.create_index("ix_recovered_prices_case_id", "recovered_prices", ["case_id"])
    op.create_index("ix_recovered_prices_subscription_id", "recovered_prices", ["subscription_id"])
    op.create_index(
        "ix_recovered_prices_opened",
        "recovered_prices",
        ["opened_at", "currency", "subscription_id", "interval", "interval_count", "amount"],
    )
    op.execute(
        f"INSERT INTO recovered_prices ({PRICE_COLUMNS}) "
        f"SELECT c.id, c.currency, c.opened_at, c.subscription_id, {IV}, "
        f"i.interval_count, {AMOUNT} FROM recovery_cases c "
        f"JOIN subscription_items i ON i.subscription_id = c.subscription_id "
        f"WHERE c.status = 'recovered' "
        f"GROUP BY c.id, c.currency, c.opened_at, c.subscription_id, {IV}, "
        f"i.interval_count"
    )
    if postgres:
        _postgres_triggers()
    else:
        _sqlite_triggers()

    op.create_table(
        "currency_day_rollups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("cases", sa.BigInteger(), nullable=False),
        sa.Column("sessions", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_currency_day_rollups")),
    )
    op.create_index(
        "ix_currency_day_rollups_currency_day", "currency_day_rollups", ["currency", "day"]
    )
    as_date = "CAST({} AS date)" if postgres else "date({})"
    opened, created = as_date.format("opened_at"), as_date.format("created_at")
    op.execute(
        "INSERT INTO currency_day_rollups (day, currency, cases, sessions) "
        "SELECT d, c, sum(n), sum(m) FROM ("
        f"SELECT {opened} AS d, currency AS c, count(*) AS n, 0 AS m FROM recovery_cases "
        f"GROUP BY {opened}, currency UNION ALL "
        f"SELECT {created}, currency, 0, count(*) FROM cancel_sessions "
        f"GROUP BY {created}, currency) x GROUP BY d, c"
    )

    op.create_index("ix_recovery_cases_status_closed", "recovery_cases", ["status", "closed_at"])
    op.create_index("ix_cancel_sessions_decided_at", "cancel_sessions", ["decided_at"])


def downgrade() -> None:
    op.drop_index("ix_cancel_sessions_decided_at", table_name="cancel_sessions")
    op.drop_index("ix_recovery_cases_status_closed", table_name="recovery_cases")
    op.drop_index("ix_currency_day_rollups_currency_day", table_name="currency_day_rollups")
    op.drop_table("currency_day_rollups")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS recovered_prices_items ON subscription_items")
        op.execute("DROP FUNCTION IF EXISTS recovered_prices_items()")
        op.execute("DROP TRIGGER IF EXISTS recovered_prices_cases ON recovery_cases")
        op.execute("DROP FUNCTION IF EXISTS recovered_prices_cases()")
    else:
        for table in ("cases", "items"):
            for when in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS recovered_prices_{table}_{when}")
    op.drop_index("ix_recovered_prices_opened", table_name="recovered_prices")
    op.drop_index("ix_recovered_prices_subscription_id", table_name="recovered_prices")
    op.drop_index("ix_recovered_prices_case_id", table_name="recovered_prices")
    op.drop_table("recovered_prices")
