"""overview rollups: per day and currency, kept by the worker; dirty days marked by triggers

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-04 18:40:00

Triggers (not application code) mark a (day, currency) dirty, in the same transaction as the
change, so every writer - webhooks, due actions, pages, the demo's seeding, raw SQL - keeps the
rollups honest without knowing about them (models/rollups.py). They mark what a rollup row
depends on:
- a case (opened day): its figures; a recovered one's durability also hangs on its
  subscription's cancellation and invoices;
- a cancel session (created day), and the saves of the same subscription (a later cancel
  reverses them);
- a subscription's cancellation, an invoice's status / payment / creation: the days of the
  subscription's recoveries and saves (validated / durable at 30/60/90 days);
- a message of a recovered case (sent, or deleted by the retention job): its day (the channel
  of the last reminder before the payment).
Each change inserts its own dirty row (no unique index, so concurrent writers never wait on each
other for it); the worker deletes the rows its snapshot saw once it has recomputed their days.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SAVED = "('saved_by_pause', 'saved_by_downgrade', 'saved_by_longer_term', 'saved_by_discount')"
CASE_COLUMNS = (
    "status, close_reason, recovered_via, decline_category, card_brand, currency, amount_due, "
    "amount_recovered, opened_at, closed_at, subscription_id"
)
SESSION_COLUMNS = (
    "created_at, currency, outcome, reason, decided_at, mrr_before, mrr_after, subscription_id"
)
INVOICE_COLUMNS = "status, paid_at, created, subscription_id"
MESSAGE_COLUMNS = "case_id, channel, status, sent_at"
SUBSCRIPTION_COLUMNS = "canceled_at, ended_at"


def _mark(days: str) -> str:
    """Insert the (day, currency) pairs `days` selects. Always a row of this transaction's own,
    even when the day is dirty already: the worker removes only the rows its snapshot saw, so
    a change it could not see keeps its day dirty (models/rollups.py)."""
    return (
        f"INSERT INTO overview_dirty_days (day, currency) SELECT DISTINCT s.d, s.c "
        f"FROM ({days}) s WHERE s.d IS NOT NULL"
    )


def _of_subscription(sub: str, as_date: str) -> str:
    """The days of a subscription's recoveries and saves."""
    return (
        f"SELECT {as_date.format('opened_at')} AS d, currency AS c FROM recovery_cases "
        f"WHERE subscription_id = {sub} AND status = 'recovered' UNION "
        f"SELECT {as_date.format('created_at')} AS d, currency AS c FROM cancel_sessions "
        f"WHERE subscription_id = {sub} AND outcome IN {SAVED}"
    )


def _case(row: str, as_date: str) -> str:
    return _mark(f"SELECT {as_date.format(row + '.opened_at')} AS d, {row}.currency AS c")


def _session(row: str, as_date: str) -> str:
    return _mark(
        f"SELECT {as_date.format(row + '.created_at')} AS d, {row}.currency AS c UNION "
        f"SELECT {as_date.format('created_at')} AS d, currency AS c FROM cancel_sessions "
        f"WHERE subscription_id = {row}.subscription_id AND outcome IN {SAVED}"
    )


def _subscription(sub: str, as_date: str) -> str:
    return _mark(_of_subscription(sub, as_date))


def _message(row: str, as_date: str) -> str:
    """A reminder sent (or deleted): its case's day, when the case was recovered."""
    return _mark(
        f"SELECT {as_date.format('opened_at')} AS d, currency AS c FROM recovery_cases "
        f"WHERE id = {row}.case_id AND status = 'recovered'"
    )


# (table, name, columns watched on update, statement per row reference)
WATCHED = (
    ("recovery_cases", "cases", CASE_COLUMNS, _case),
    ("cancel_sessions", "sessions", SESSION_COLUMNS, _session),
    (
        "invoices",
        "invoices",
        INVOICE_COLUMNS,
        lambda r, d: _subscription(f"{r}.subscription_id", d),
    ),
    (
        "subscriptions",
        "subscriptions",
        SUBSCRIPTION_COLUMNS,
        lambda r, d: _subscription(f"{r}.id", d),
    ),
    ("outbox_messages", "messages", MESSAGE_COLUMNS, _message),
)


def _sqlite_upgrade() -> None:
    as_date = "date({})"
    for table, name, columns, mark in WATCHED:
        new, old = mark("NEW", as_date), mark("OLD", as_date)
        op.execute(
            f"CREATE TRIGGER overview_dirty_{name}_insert AFTER INSERT ON {table} BEGIN {new}; END"
        )
        op.execute(
            f"CREATE TRIGGER overview_dirty_{name}_update AFTER UPDATE OF {columns} ON {table} "
            f"BEGIN {old}; {new}; END"
        )
        op.execute(
            f"CREATE TRIGGER overview_dirty_{name}_delete AFTER DELETE ON {table} BEGIN {old}; END"
        )


def _postgres_upgrade() -> None:
    as_date = "CAST({} AS date)"
    for table, name, columns, mark in WATCHED:
        new, old = mark("NEW", as_date), mark("OLD", as_date)
        op.execute(
            f"""CREATE FUNCTION overview_dirty_{name}() RETURNS trigger AS $$
            BEGIN
              IF TG_OP IN ('UPDATE', 'DELETE') THEN {old}; END IF;
              IF TG_OP IN ('INSERT', 'UPDATE') THEN {new}; END IF;
              RETURN NULL;
            END $$ LANGUAGE plpgsql"""
        )
        op.execute(
            f"CREATE TRIGGER overview_dirty_{name} AFTER INSERT OR DELETE OR UPDATE OF {columns} "
            f"ON {table} FOR EACH ROW EXECUTE FUNCTION overview_dirty_{name}()"
        )


def upgrade() -> None:
    op.create_table(
        "overview_dirty_days",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_overview_dirty_days")),
    )
    op.create_index(
        "ix_overview_dirty_days_currency_day", "overview_dirty_days", ["currency", "day"]
    )
    op.create_table(
        "case_day_rollups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=30), nullable=False),
        sa.Column("close_reason", sa.String(length=40), nullable=False),
        sa.Column("recovered_via", sa.String(length=30), nullable=False),
        sa.Column("decline_category", sa.String(length=30), nullable=False),
        sa.Column("card_brand", sa.String(length=40), nullable=False),
        sa.Column("cases", sa.BigInteger(), nullable=False),
        sa.Column("amount_due", sa.BigInteger(), nullable=False),
        sa.Column("amount_recovered", sa.BigInteger(), nullable=False),
        sa.Column("recovered_30", sa.BigInteger(), nullable=False),
        sa.Column("recovered_60", sa.BigInteger(), nullable=False),
        sa.Column("recovered_90", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_day_rollups")),
    )
    op.create_index("ix_case_day_rollups_currency_day", "case_day_rollups", ["currency", "day"])
    op.create_table(
        "cancel_day_rollups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("outcome", sa.String(length=30), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=False),
        sa.Column("reversed", sa.Boolean(), nullable=False),
        sa.Column("sessions", sa.BigInteger(), nullable=False),
        sa.Column("mrr_before", sa.BigInteger(), nullable=False),
        sa.Column("mrr_after", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cancel_day_rollups")),
    )
    op.create_index("ix_cancel_day_rollups_currency_day", "cancel_day_rollups", ["currency", "day"])
    op.create_table(
        "channel_day_rollups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("cases", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channel_day_rollups")),
    )
    op.create_index(
        "ix_channel_day_rollups_currency_day", "channel_day_rollups", ["currency", "day"]
    )
    op.create_table(
        "held_day_rollups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("window_days", sa.Integer(), nullable=False),
        sa.Column("end_day", sa.Date(), nullable=False),
        sa.Column("early", sa.Boolean(), nullable=False),
        sa.Column("outcome", sa.String(length=10), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_held_day_rollups")),
    )
    op.create_index("ix_held_day_rollups_currency_day", "held_day_rollups", ["currency", "day"])
    op.create_index(
        "ix_recovery_cases_recovered_cohort",
        "recovery_cases",
        ["status", "opened_at", "currency", "subscription_id", "closed_at"],
    )
    op.create_index(
        "ix_subscription_items_monthly",
        "subscription_items",
        ["subscription_id", "interval", "interval_count", "unit_amount", "quantity"],
    )
    if op.get_bind().dialect.name == "postgresql":
        _postgres_upgrade()
    else:
        _sqlite_upgrade()
    # Every day that has cases or sessions already: the worker's first refresh computes them;
    # until then the overview computes them directly, as before.
    op.execute(
        "INSERT INTO overview_dirty_days (day, currency) "
        "SELECT DISTINCT CAST(opened_at AS date), currency FROM recovery_cases UNION "
        "SELECT DISTINCT CAST(created_at AS date), currency FROM cancel_sessions"
        if op.get_bind().dialect.name == "postgresql"
        else "INSERT INTO overview_dirty_days (day, currency) "
        "SELECT DISTINCT date(opened_at), currency FROM recovery_cases UNION "
        "SELECT DISTINCT date(created_at), currency FROM cancel_sessions"
    )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table, name, _columns, _mark in WATCHED:
        if postgres:
            op.execute(f"DROP TRIGGER IF EXISTS overview_dirty_{name} ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS overview_dirty_{name}()")
        else:
            for when in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS overview_dirty_{name}_{when}")
    op.drop_index("ix_subscription_items_monthly", table_name="subscription_items")
    op.drop_index("ix_recovery_cases_recovered_cohort", table_name="recovery_cases")
    tables = ("held_day_rollups", "channel_day_rollups", "cancel_day_rollups", "case_day_rollups")
    for table in tables:
        op.drop_index(f"ix_{table}_currency_day", table_name=table)
        op.drop_table(table)
    op.drop_index("ix_overview_dirty_days_currency_day", table_name="overview_dirty_days")
    op.drop_table("overview_dirty_days")
