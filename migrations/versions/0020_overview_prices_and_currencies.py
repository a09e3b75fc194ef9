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
- `subscription_cards`: each subscription's renewal card and currency, kept by triggers on the
  mirror's tables (models/rollups.py `SubscriptionCard`): the expiring cards read from it.
- `recovery_time_day_rollups`: recovered cases by whole days taken, the median's histogram.
- `held_end_rollups`: the saves' and recoveries' 30/60/90-day windows by the hour they end,
  for the windows that end today; computed by the worker (its days marked dirty here).
- indexes by the time a recovery was paid and a save decided: the windows ending this hour.
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


CARD_COLUMNS = (
    "subscription_id, customer_id, currency, live, card_ref, card_id, exp_month, exp_year, "
    "card_created, owned"
)
DEFAULT_CARD = (
    "coalesce(s.default_payment_method_id, s.default_source_id, c.default_payment_method_id, "
    "c.default_source_id)"
)


def _cards_of(where: str) -> str:
    """The rows of the subscriptions `where` selects: their renewal's card (the same order as
    services/expiry.default_card) and currency (its own, else its items', else usd)."""
    return (
        f"INSERT INTO subscription_cards ({CARD_COLUMNS}) "
        f"SELECT s.id, s.customer_id, coalesce(s.currency, (SELECT min(i.currency) "
        f"FROM subscription_items i WHERE i.subscription_id = s.id), 'usd'), "
        f"s.status IN ('active', 'trialing') AND NOT s.cancel_at_period_end, "
        f"{DEFAULT_CARD}, pm.id, pm.exp_month, pm.exp_year, pm.created, "
        f"coalesce(pm.customer_id = s.customer_id, false) "
        f"FROM subscriptions s LEFT JOIN customers c ON c.id = s.customer_id "
        f"LEFT JOIN payment_methods pm ON pm.id = {DEFAULT_CARD} WHERE {where}"
    )


def _card_row(card: str) -> str:
    """A card changed (expiry moved by the network, attached, deleted): the subscriptions that
    charge it take its row as it is now."""
    field = "(SELECT pm.{} FROM payment_methods pm WHERE pm.id = " + card + ")"
    return (
        f"UPDATE subscription_cards SET card_id = {field.format('id')}, "
        f"exp_month = {field.format('exp_month')}, exp_year = {field.format('exp_year')}, "
        f"card_created = {field.format('created')}, "
        f"owned = coalesce({field.format('customer_id')} = subscription_cards.customer_id, false) "
        f"WHERE card_ref = {card}"
    )


# (table, name, columns watched on update, statements for a row reference)
CARD_WATCHED = (
    (
        "subscriptions",
        "subscriptions",
        "customer_id, status, cancel_at_period_end, currency, default_payment_method_id, "
        "default_source_id",
        lambda r: [
            f"DELETE FROM subscription_cards WHERE subscription_id = {r}.id",
            _cards_of(f"s.id = {r}.id"),
        ],
    ),
    (
        "customers",
        "customers",
        "default_payment_method_id, default_source_id",
        lambda r: [
            f"DELETE FROM subscription_cards WHERE customer_id = {r}.id",
            _cards_of(f"s.customer_id = {r}.id"),
        ],
    ),
    (
        "subscription_items",
        "items",
        "subscription_id, currency",
        # the items' currency counts only for a subscription without one of its own
        lambda r: [
            f"DELETE FROM subscription_cards WHERE subscription_id = {r}.subscription_id "
            f"AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.id = {r}.subscription_id "
            f"AND s.currency IS NULL)",
            _cards_of(f"s.id = {r}.subscription_id AND s.currency IS NULL"),
        ],
    ),
    (
        "payment_methods",
        "cards",
        "id, customer_id, exp_month, exp_year, created",
        lambda r: [_card_row(f"{r}.id")],
    ),
)


def _moved(columns: str, postgres: bool) -> str:
    """An UPDATE that changed one of `columns`: the mirror writes every column of an object it
    applies, so most updates move none of them and their trigger does nothing."""
    same = "IS DISTINCT FROM" if postgres else "IS NOT"
    return " OR ".join(f"OLD.{c} {same} NEW.{c}" for c in (c.strip() for c in columns.split(",")))


def _unless_moved(columns: str) -> str:
    """plpgsql: leave an UPDATE that moved none of `columns`."""
    return f"IF TG_OP = 'UPDATE' AND NOT ({_moved(columns, True)}) THEN RETURN NULL; END IF;"


def _card_triggers(postgres: bool) -> None:
    for table, name, columns, statements in CARD_WATCHED:
        new, old = "; ".join(statements("NEW")), "; ".join(statements("OLD"))
        if postgres:
            op.execute(
                f"""CREATE FUNCTION subscription_cards_{name}() RETURNS trigger AS $$
                BEGIN
                  {_unless_moved(columns)}
                  IF TG_OP IN ('UPDATE', 'DELETE') THEN {old}; END IF;
                  IF TG_OP IN ('INSERT', 'UPDATE') THEN {new}; END IF;
                  RETURN NULL;
                END $$ LANGUAGE plpgsql"""
            )
            op.execute(
                f"CREATE TRIGGER subscription_cards_{name} AFTER INSERT OR DELETE OR UPDATE OF "
                f"{columns} ON {table} FOR EACH ROW EXECUTE FUNCTION subscription_cards_{name}()"
            )
            continue
        op.execute(
            f"CREATE TRIGGER subscription_cards_{name}_insert AFTER INSERT ON {table} "
            f"BEGIN {new}; END"
        )
        op.execute(
            f"CREATE TRIGGER subscription_cards_{name}_update AFTER UPDATE OF {columns} "
            f"ON {table} WHEN {_moved(columns, False)} BEGIN {old}; {new}; END"
        )
        op.execute(
            f"CREATE TRIGGER subscription_cards_{name}_delete AFTER DELETE ON {table} "
            f"BEGIN {old}; END"
        )


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
        f"ON recovery_cases WHEN {_moved(CASE_COLUMNS, False)} "
        f"BEGIN {forget}; {_prices_of_case('NEW')}; END"
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
        f"ON subscription_items WHEN {_moved(ITEM_COLUMNS, False)} "
        f"BEGIN {'; '.join(old + new)}; END"
    )
    op.execute(
        "CREATE TRIGGER recovered_prices_items_delete AFTER DELETE ON subscription_items "
        f"BEGIN {'; '.join(old)}; END"
    )


def _recovered(row: str) -> str:
    """plpgsql: the item's subscription has a recovered case (else it has no prices to keep:
    most subscriptions' items are replaced with nothing to do but this probe)."""
    return (
        f"EXISTS (SELECT 1 FROM recovery_cases WHERE subscription_id = {row}.subscription_id "
        f"AND status = 'recovered')"
    )


def _postgres_triggers() -> None:
    op.execute(
        f"""CREATE FUNCTION recovered_prices_cases() RETURNS trigger AS $$
        BEGIN
          {_unless_moved(CASE_COLUMNS)}
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
          {_unless_moved(ITEM_COLUMNS)}
          IF TG_OP IN ('UPDATE', 'DELETE') AND {_recovered("OLD")} THEN {"; ".join(old)}; END IF;
          IF TG_OP IN ('INSERT', 'UPDATE') AND {_recovered("NEW")} THEN {"; ".join(new)}; END IF;
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

    op.create_table(
        "subscription_cards",
        sa.Column("subscription_id", sa.String(length=255), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("live", sa.Boolean(), nullable=False),
        sa.Column("card_ref", sa.String(length=255), nullable=True),
        sa.Column("card_id", sa.String(length=255), nullable=True),
        sa.Column("exp_month", sa.Integer(), nullable=True),
        sa.Column("exp_year", sa.Integer(), nullable=True),
        sa.Column("card_created", sa.BigInteger(), nullable=True),
        sa.Column("owned", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("subscription_id", name=op.f("pk_subscription_cards")),
    )
    op.create_index("ix_subscription_cards_customer_id", "subscription_cards", ["customer_id"])
    op.create_index("ix_subscription_cards_card_ref", "subscription_cards", ["card_ref"])
    op.create_index(
        "ix_subscription_cards_expiring",
        "subscription_cards",
        ["currency", "exp_year", "exp_month", "live", "owned", "card_id"],
    )
    op.execute(_cards_of("true"))
    _card_triggers(postgres)

    op.create_table(
        "held_end_rollups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("window_days", sa.Integer(), nullable=False),
        sa.Column("end_day", sa.Date(), nullable=False),
        sa.Column("end_hour", sa.Integer(), nullable=False),
        sa.Column("early", sa.Boolean(), nullable=False),
        sa.Column("outcome", sa.String(length=10), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_held_end_rollups")),
    )
    op.create_index(
        "ix_held_end_rollups_currency_end_day", "held_end_rollups", ["currency", "end_day"]
    )
    op.create_table(
        "recovery_time_day_rollups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("days_taken", sa.Integer(), nullable=False),
        sa.Column("cases", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recovery_time_day_rollups")),
    )
    op.create_index(
        "ix_recovery_time_day_rollups_currency_day",
        "recovery_time_day_rollups",
        ["currency", "day"],
    )
    # Their rows come from held() (Python) and the engine's date arithmetic: the days that
    # have saves or recoveries are dirty until the worker's next refresh computes them (read
    # directly until then).
    op.execute(
        "INSERT INTO overview_dirty_days (day, currency) "
        "SELECT DISTINCT day, currency FROM held_day_rollups UNION "
        f"SELECT DISTINCT {opened}, currency FROM recovery_cases WHERE status = 'recovered'"
    )

    op.create_index("ix_recovery_cases_status_closed", "recovery_cases", ["status", "closed_at"])
    op.create_index("ix_cancel_sessions_decided_at", "cancel_sessions", ["decided_at"])


def downgrade() -> None:
    op.drop_index("ix_cancel_sessions_decided_at", table_name="cancel_sessions")
    op.drop_index("ix_recovery_cases_status_closed", table_name="recovery_cases")
    op.drop_index(
        "ix_recovery_time_day_rollups_currency_day", table_name="recovery_time_day_rollups"
    )
    op.drop_table("recovery_time_day_rollups")
    op.drop_index("ix_held_end_rollups_currency_end_day", table_name="held_end_rollups")
    op.drop_table("held_end_rollups")
    op.drop_index("ix_currency_day_rollups_currency_day", table_name="currency_day_rollups")
    op.drop_table("currency_day_rollups")
    postgres = op.get_bind().dialect.name == "postgresql"
    for table, name, _columns, _statements in CARD_WATCHED:
        if postgres:
            op.execute(f"DROP TRIGGER IF EXISTS subscription_cards_{name} ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS subscription_cards_{name}()")
        else:
            for when in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS subscription_cards_{name}_{when}")
    for index in ("expiring", "card_ref", "customer_id"):
        op.drop_index(f"ix_subscription_cards_{index}", table_name="subscription_cards")
    op.drop_table("subscription_cards")
    if postgres:
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
