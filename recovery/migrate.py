"""Run the Alembic migrations from code (CLI, tests, the demo)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from recovery.resources import MIGRATIONS


def alembic_config(database_url: str) -> Config:
    """The same configuration as alembic.ini (which stays in the repository for the `alembic`
    command), built in code so an installed package needs no ini file."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["database_url"] = database_url
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)  # the instance folder
    command.upgrade(alembic_config(database_url), revision)


# Indexes a migration creates only where the database can (0015: pg_trgm's GIN indexes for the
# dashboard's search, skipped where the extension is missing; 0021: an index on PostgreSQL's
# own date arithmetic). They are not in the models, so comparing the database with the models
# (`alembic check`) must not ask to drop them.
DATABASE_ONLY_INDEXES = frozenset(
    {
        "ix_customers_email_trgm",
        "ix_customers_name_trgm",
        "ix_recovery_cases_recovery_seconds",
        "ix_outbox_messages_expiry_sent",  # 0022: PostgreSQL's INCLUDE, the sent notices
    }
)


def include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """Alembic's comparison filter: everything but the indexes above."""
    return not (type_ == "index" and reflected and name in DATABASE_ONLY_INDEXES)
